// The tenant's audit log, newest first, with filters (action or its prefix such as
// `device.`, target, actor) and older pages.

import { useState } from "preact/hooks";
import { get, type AuditEntry, type Page } from "../api";
import { ErrorBox, Loading, usePoll } from "../ui";
import { AuditTable } from "./Device";

export function Audit(props: { tenant: string }) {
  const empty = { action: "", target: "", actor: "" };
  const [filters, setFilters] = useState(empty);
  const [draft, setDraft] = useState(empty);
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1];
  const page = usePoll(
    () => get<Page<AuditEntry>>("/v1/audit", { ...filters, limit: 50, cursor }),
    JSON.stringify([props.tenant, filters, cursor]),
  );
  const input = (name: keyof typeof empty, label: string, placeholder: string) => (
    <label>
      {label}
      <input
        name={`audit_${name}`}
        value={draft[name]}
        placeholder={placeholder}
        onInput={(e) => setDraft({ ...draft, [name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
  return (
    <section>
      <h1>Audit log</h1>
      <form
        class="filters"
        aria-label="audit filters"
        onSubmit={(e) => {
          e.preventDefault();
          setFilters({ action: draft.action.trim(), target: draft.target.trim(), actor: draft.actor.trim() });
          setCursors([null]);
        }}
      >
        {input("action", "action", "device. or device.disabled")}
        {input("target", "target", "a device id, rollout id…")}
        {input("actor", "actor", "who")}
        <button type="submit">Filter</button>
      </form>
      <ErrorBox error={page.error} />
      {!page.data ? (
        !page.error && <Loading what="the audit log" />
      ) : (
        <>
          <AuditTable items={page.data.items} />
          <div class="pager">
            <button disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              ← Newer
            </button>
            <button disabled={!page.data.next_cursor} onClick={() => setCursors([...cursors, page.data!.next_cursor])}>
              Older →
            </button>
          </div>
        </>
      )}
    </section>
  );
}
