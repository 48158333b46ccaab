// The console's only way to the server: the public API (schemas/openapi.yaml), with
// the signed-in token as a bearer token. Problems (RFC 9457) become ApiError; a 401
// signs the session out with a message; a network failure marks the server as
// unreachable until the next request that gets through.

import { signal } from "./signal";
import { session, signOut, tenantToken } from "./session";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string | undefined,
    readonly errors: { pointer?: string; detail?: string }[] = [],
  ) {
    super(detail ? `${title}: ${detail}` : title);
  }
}

/** True while the last request failed to reach the server (or got a 502/503/504). */
export const unreachable = signal(false);

type Query = Record<string, string | number | boolean | undefined | null>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment, percent-encoded: ids come from devices and may hold anything. */
export const seg = (value: string) => encodeURIComponent(value);

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Query;
  headers?: Record<string, string>;
  /** The operator's own token instead of the tenant token (tenant lists, minting). */
  asOperator?: boolean;
}

export interface Answer<T> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<Answer<T>> {
  const s = session.value;
  const token = options.asOperator ? s?.token : (tenantToken() ?? s?.token);
  const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] ??= "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(withQuery(path, options.query), {
      method: options.method ?? "GET",
      headers,
      body,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    unreachable.value = true;
    throw new ApiError(0, "The server cannot be reached", "Check the network; retrying.");
  }
  unreachable.value = response.status === 502 || response.status === 503 || response.status === 504;
  const text = await response.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (response.status === 401 && token) {
    signOut("Your session has expired or the token was revoked. Sign in again.");
  }
  if (response.status >= 400) {
    const problem = (parsed && typeof parsed === "object" ? parsed : {}) as {
      title?: string;
      detail?: string;
      errors?: { pointer?: string; detail?: string }[];
    };
    throw new ApiError(
      response.status,
      problem.title ?? `HTTP ${response.status}`,
      problem.detail,
      problem.errors ?? [],
    );
  }
  return { status: response.status, body: parsed as T, headers: response.headers };
}

export async function get<T>(path: string, query?: Query): Promise<T> {
  return (await request<T>(path, { query })).body;
}

export const post = async <T>(path: string, body?: unknown, headers?: Record<string, string>) =>
  (await request<T>(path, { method: "POST", body: body ?? {}, headers })).body;

export const patch = async <T>(path: string, body: unknown, headers?: Record<string, string>) =>
  (await request<T>(path, { method: "PATCH", body, headers })).body;

export const del = async (path: string, query?: Query) => {
  await request<unknown>(path, { method: "DELETE", query });
};

// --- the API's shapes (schemas/openapi.yaml), as far as the console reads them

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Me {
  role: "operator" | "admin" | "device";
  subject: string;
  tenant_id: string | null;
  expires_at: string;
}

export interface Tenant {
  id: string;
  name: string;
  created_at: string;
}

export interface Device {
  id: string;
  model: string;
  channel: string;
  tags: string[];
  status: "active" | "disabled" | "decommissioned";
  key_generation: number;
  created_at: string;
  updated_at: string;
  last_seen?: string | null;
  keys?: { state: string; algorithm: string; fingerprint: string; created_at: string }[];
  metrics?: Record<string, { ts: string; value: number | boolean }>;
}

export interface FleetSummary {
  devices: {
    total: number;
    by_status: Record<string, number>;
    by_model: Record<string, number>;
    by_channel: Record<string, number>;
  };
  seen: { last_5m: number; last_1h: number; last_24h: number };
  ingest: { minute_readings: { minute: string; readings: number }[] };
}

export interface Bucket {
  start: string;
  avg?: number | null;
  min?: number | null;
  max?: number | null;
  count?: number;
}

export interface Series {
  metric: string;
  bucket: string;
  from: string;
  to: string;
  buckets: Bucket[];
}

export interface AuditEntry {
  id: string;
  at: string;
  actor: { role: string; name: string };
  action: string;
  target: string;
  details: Record<string, unknown>;
}

export interface Firmware {
  id: string;
  model: string;
  version: string;
  url: string;
  sha256: string;
  size: number;
  notes?: string;
  created_at: string;
  created_by: string;
}

export interface StageCounts {
  stage: number;
  percent: number;
  offered: number;
  downloading: number;
  installing: number;
  installed: number;
  failed: number;
  timed_out: number;
}

export interface Rollout {
  id: string;
  firmware_id: string;
  model: string;
  version: string;
  selector: { channel?: string; tags?: string[]; versions?: string };
  stages: number[];
  stage: number;
  stage_percent: number;
  failure_threshold: number;
  min_reports: number;
  report_timeout_secs: number;
  state: "active" | "paused" | "halted" | "aborted";
  halt_reason: string | null;
  counts?: Omit<StageCounts, "stage" | "percent">;
  stage_counts?: StageCounts[];
  devices?: number;
  failure_rate?: number;
  created_at: string;
  updated_at: string;
}

export interface OtaHistoryEntry {
  rollout_id: string;
  firmware_id: string;
  version: string;
  from_version: string;
  state: string;
  timed_out: boolean;
  error: string | null;
  stage: number;
  offered_at: string;
  updated_at: string;
}

export interface DeviceState {
  device_id: string;
  desired: Record<string, unknown>;
  desired_version: number;
  reported: Record<string, unknown>;
  reported_version: number;
  delta: Record<string, unknown>;
}

export interface Command {
  id: string;
  device_id: string;
  name: string;
  parameters: Record<string, unknown>;
  status: string;
  output: unknown;
  created_by: string;
  created_at: string;
  expires_at: string;
  delivered_at: string | null;
  finished_at: string | null;
}
