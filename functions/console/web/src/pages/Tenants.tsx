// Operators choose the tenant to look at; the console then acts with an admin token
// minted for it (audited as `token.minted`).

import { useState } from "preact/hooks";
import { request, type Page, type Tenant } from "../api";
import { chooseTenant } from "../session";
import { ErrorBox, Loading, usePoll } from "../ui";

export function Tenants() {
  const tenants = usePoll(
    async () => (await request<Page<Tenant>>("/v1/tenants", { query: { limit: 200 }, asOperator: true })).body,
    "tenants",
    30000,
  );
  const [error, setError] = useState<unknown>(null);
  return (
    <section>
      <h1>Choose a tenant</h1>
      <ErrorBox error={tenants.error} />
      <ErrorBox error={error} />
      {!tenants.data ? (
        !tenants.error && <Loading what="tenants" />
      ) : tenants.data.items.length === 0 ? (
        <p class="muted">No tenants yet: create one with <code>toaster tenants create</code>.</p>
      ) : (
        <ul class="tenants">
          {tenants.data.items.map((t) => (
            <li>
              <button onClick={() => chooseTenant(t.id).catch(setError)}>
                {t.name} <span class="muted">({t.id})</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
