// Who is signed in. The token comes from the sign-in form or from the link `toaster up`
// prints (`/console/#token=…`: a URL fragment never reaches the server or its logs),
// is checked with GET /v1/auth/me, and is kept in sessionStorage (this tab only, gone
// when it closes). Operators pick a tenant: the console mints an admin token for it
// (POST /v1/tenants/{id}/tokens, audited as `token.minted`) that expires with theirs.

import type { Me } from "./api";
import { signal } from "./signal";

export interface Session {
  token: string;
  me: Me;
}

const TOKEN = "toaster.console.token";
const TENANT = "toaster.console.tenant";

interface TenantSession {
  id: string;
  token: string;
}

function load<T>(key: string): T | null {
  try {
    const text = sessionStorage.getItem(key);
    return text ? (JSON.parse(text) as T) : null;
  } catch {
    return null;
  }
}

export const session = signal<Session | null>(load<Session>(TOKEN));
export const tenant = signal<TenantSession | null>(load<TenantSession>(TENANT));
/** Why the sign-in page is showing (an expired token, a sign-out). */
export const signInMessage = signal<string | null>(null);

/** The admin token of the tenant an operator picked, if any. */
export const tenantToken = () => tenant.value?.token ?? null;

/** The tenant the pages show: an admin's own, or the one an operator picked. */
export function currentTenant(): string | null {
  const s = session.value;
  if (!s) return null;
  return s.me.role === "admin" ? s.me.tenant_id : (tenant.value?.id ?? null);
}

async function whoIs(token: string): Promise<Me> {
  let response: Response;
  try {
    response = await fetch("/v1/auth/me", {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new Error("The server cannot be reached.");
  }
  if (response.status === 401) throw new Error("This token is not valid (expired, revoked or mistyped).");
  if (!response.ok) throw new Error(`The server answered ${response.status}; try again.`);
  return (await response.json()) as Me;
}

export async function signIn(token: string): Promise<void> {
  const trimmed = token.trim();
  if (!trimmed) throw new Error("Paste an operator or admin token.");
  const me = await whoIs(trimmed);
  if (me.role === "device") throw new Error("A device token cannot sign in to the console.");
  const next = { token: trimmed, me };
  sessionStorage.setItem(TOKEN, JSON.stringify(next));
  sessionStorage.removeItem(TENANT);
  tenant.value = null;
  signInMessage.value = null;
  session.value = next;
}

export function signOut(message: string | null = null): void {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(TENANT);
  tenant.value = null;
  signInMessage.value = message;
  session.value = null;
}

/** Operators: an admin token for `id`, living as long as the operator's own. */
export async function chooseTenant(id: string): Promise<void> {
  const s = session.value;
  if (!s || s.me.role !== "operator") return;
  const left = Math.floor((Date.parse(s.me.expires_at) - Date.now()) / 1000);
  const response = await fetch(`/v1/tenants/${encodeURIComponent(id)}/tokens`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${s.token}`,
      "Content-Type": "application/json",
      Accept: "application/json",
    },
    body: JSON.stringify({ subject: `${s.me.subject} (console)`, ttl_secs: Math.max(60, Math.min(left, 2592000)) }),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) {
    signOut("Your session has expired. Sign in again.");
    return;
  }
  if (!response.ok) throw new Error(`Could not open tenant ${id} (HTTP ${response.status}).`);
  const minted = (await response.json()) as { access_token: string };
  const next = { id, token: minted.access_token };
  sessionStorage.setItem(TENANT, JSON.stringify(next));
  tenant.value = next;
}

/** Takes a token from the URL fragment (`#token=…`) and removes it from the address bar. */
export function tokenFromFragment(): string | null {
  const hash = window.location.hash;
  if (!hash.startsWith("#")) return null;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get("token");
  if (token) history.replaceState(null, "", window.location.pathname + window.location.search);
  return token;
}

/** Operators: back to the tenant list. */
export function leaveTenant(): void {
  sessionStorage.removeItem(TENANT);
  tenant.value = null;
}
