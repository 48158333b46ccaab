// One device: its registry entry and actions, latest values, charts from the
// rollups, desired/reported state with an editor, commands, OTA history, audit.

import { useMemo, useState } from "preact/hooks";
import {
  ApiError,
  del,
  get,
  patch,
  post,
  request,
  seg,
  type AuditEntry,
  type Command,
  type Device as DeviceT,
  type DeviceState,
  type OtaHistoryEntry,
  type Page,
  type Series,
} from "../api";
import { TimeChart } from "../chart";
import { navigate, queryParam } from "../router";
import { ActionButton, ErrorBox, Json, Link, Loading, Time, formatTime, usePoll } from "../ui";

export function Device(props: { tenant: string; id: string }) {
  const path = `/v1/devices/${seg(props.id)}`;
  const device = usePoll(() => get<DeviceT>(path), `${props.tenant}/${props.id}`);
  const d = device.data;
  if (device.error?.status === 404) {
    return (
      <section>
        <h1>Device not found</h1>
        <p>
          There is no device <code>{props.id}</code> in this tenant.
        </p>
      </section>
    );
  }
  return (
    <section>
      <h1>
        Device <span class="id">{props.id}</span>
      </h1>
      <ErrorBox error={device.error} />
      {!d ? (
        !device.error && <Loading what="the device" />
      ) : (
        <>
          <Registry device={d} path={path} reload={device.reload} />
          <Latest device={d} />
          <Charts id={props.id} metrics={Object.keys(d.metrics ?? {}).sort()} />
          <State id={props.id} />
          <Commands id={props.id} />
          <OtaHistory id={props.id} />
          <DeviceAudit id={props.id} />
        </>
      )}
    </section>
  );
}

function Registry(props: { device: DeviceT; path: string; reload: () => void }) {
  const d = props.device;
  const [pem, setPem] = useState("");
  const pending = d.keys?.some((k) => k.state === "pending");
  const gone = d.status === "decommissioned";
  return (
    <div class="panel" aria-label="registry">
      <h2>Registry</h2>
      <dl class="facts">
        <dt>status</dt>
        <dd>
          <span class={`status ${d.status}`}>{d.status}</span>
        </dd>
        <dt>model</dt>
        <dd>{d.model}</dd>
        <dt>channel</dt>
        <dd>{d.channel}</dd>
        <dt>tags</dt>
        <dd>
          {d.tags.length === 0 && <span class="muted">none</span>}
          {d.tags.map((t) => (
            <span class="tag">{t}</span>
          ))}
        </dd>
        <dt>key generation</dt>
        <dd>{d.key_generation}</dd>
        <dt>last seen</dt>
        <dd>
          <Time at={d.last_seen} />
        </dd>
        <dt>registered</dt>
        <dd>{formatTime(d.created_at)}</dd>
        <dt>keys</dt>
        <dd>
          {(d.keys ?? []).map((k) => (
            <div>
              {k.state} {k.algorithm} <code>{k.fingerprint.slice(0, 16)}…</code>
            </div>
          ))}
        </dd>
      </dl>
      {!gone && (
        <div class="actions">
          {d.status === "active" ? (
            <ActionButton
              label="Disable"
              confirm="Disabling revokes the device's access tokens until it is enabled."
              danger
              action={() => patch(props.path, { status: "disabled" })}
              onDone={props.reload}
            />
          ) : (
            <ActionButton
              label="Enable"
              action={() => patch(props.path, { status: "active" })}
              onDone={props.reload}
            />
          )}
          {pending && (
            <ActionButton
              label="Complete rotation"
              confirm="The pending key becomes current and outstanding tokens are revoked."
              danger
              action={() => patch(props.path, { complete_rotation: true })}
              onDone={props.reload}
            />
          )}
          <ActionButton
            label="Decommission"
            confirm="Decommissioning deletes the keys and revokes the tokens; the id is never reused."
            danger
            action={() => del(props.path)}
            onDone={props.reload}
          />
          <ActionButton
            label="Erase"
            confirm="Erasing decommissions the device and deletes its telemetry and state. This cannot be undone."
            danger
            action={() => del(props.path, { erase: true })}
            onDone={() => navigate("/devices")}
          />
        </div>
      )}
      {!gone && (
        <form
          class="rotate"
          aria-label="rotate key"
          onSubmit={(e) => e.preventDefault()}
        >
          <label>
            Rotate key: the device's new public key (PEM)
            <textarea
              name="public_key"
              rows={3}
              value={pem}
              onInput={(e) => setPem((e.target as HTMLTextAreaElement).value)}
            />
          </label>
          <ActionButton
            label="Start rotation"
            disabled={!pem.trim()}
            action={() => patch(props.path, { public_key: pem.trim() })}
            onDone={() => {
              setPem("");
              props.reload();
            }}
          />
        </form>
      )}
    </div>
  );
}

function Latest(props: { device: DeviceT }) {
  const metrics = Object.entries(props.device.metrics ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return (
    <div class="panel" aria-label="latest values">
      <h2>Latest values</h2>
      {metrics.length === 0 ? (
        <p class="muted">No readings yet.</p>
      ) : (
        <table class="list">
          <thead>
            <tr>
              <th>metric</th>
              <th class="num">value</th>
              <th>at</th>
            </tr>
          </thead>
          <tbody>
            {metrics.map(([name, m]) => (
              <tr>
                <td>{name}</td>
                <td class="num">{String(m.value)}</td>
                <td>
                  <Time at={m.ts} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

// A range and the bucket that keeps it under the server's bucket cap (1,500).
const RANGES: Record<string, { ms: number; bucket: string }> = {
  "1h": { ms: 3600e3, bucket: "1m" },
  "1d": { ms: 86400e3, bucket: "5m" },
  "7d": { ms: 7 * 86400e3, bucket: "1h" },
  "30d": { ms: 30 * 86400e3, bucket: "1h" },
};

function Charts(props: { id: string; metrics: string[] }) {
  // `?range=30d` opens the charts at that range (links, bookmarks, the benchmark).
  const [range, setRange] = useState(() => (RANGES[queryParam("range")] ? queryParam("range") : "1d"));
  return (
    <div class="panel" aria-label="charts">
      <h2>Telemetry</h2>
      <div class="tabs" role="tablist">
        {Object.keys(RANGES).map((r) => (
          <button role="tab" aria-selected={r === range} class={r === range ? "on" : ""} onClick={() => setRange(r)}>
            {r}
          </button>
        ))}
      </div>
      {props.metrics.length === 0 && <p class="muted">No metrics yet.</p>}
      {props.metrics.map((m) => (
        <MetricChart id={props.id} metric={m} range={range} />
      ))}
    </div>
  );
}

function MetricChart(props: { id: string; metric: string; range: string }) {
  const { ms, bucket } = RANGES[props.range];
  const series = usePoll(
    () => {
      const to = Date.now();
      return get<Series>(`/v1/metrics/devices/${seg(props.id)}/${seg(props.metric)}`, {
        from: to - ms,
        to,
        bucket,
        agg: "avg,min,max",
        fill: "null",
      });
    },
    `${props.id}/${props.metric}/${props.range}`,
    props.range === "1h" ? 5000 : 30000,
  );
  const data = useMemo(() => {
    const b = series.data?.buckets ?? [];
    return {
      x: b.map((p) => Date.parse(p.start) / 1000),
      avg: b.map((p) => p.avg ?? null),
      min: b.map((p) => p.min ?? null),
      max: b.map((p) => p.max ?? null),
    };
  }, [series.data]);
  return (
    <div class="metric">
      <ErrorBox error={series.error} />
      {series.data ? <TimeChart title={props.metric} data={data} /> : !series.error && <Loading what={props.metric} />}
    </div>
  );
}

function State(props: { id: string }) {
  const path = `/v1/devices/${seg(props.id)}/state`;
  const state = usePoll(() => get<DeviceState>(path), props.id);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState<number | null>(null);
  const s = state.data;
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setSaved(null);
    let body: unknown;
    try {
      body = JSON.parse(draft);
    } catch {
      setError(new Error("The patch is not valid JSON."));
      return;
    }
    try {
      const answer = await request<DeviceState>(`${path}/desired`, {
        method: "PATCH",
        body,
        headers: {
          "Content-Type": "application/merge-patch+json",
          ...(s ? { "If-Match": `"${s.desired_version}"` } : {}),
        },
      });
      setSaved(answer.body.desired_version);
      setDraft("");
      state.reload();
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        setError(new Error("Desired state changed since you loaded it; review it and apply again."));
        state.reload();
      } else setError(err);
    }
  };
  return (
    <div class="panel" aria-label="state">
      <h2>State</h2>
      <ErrorBox error={state.error} />
      {s && (
        <div class="columns">
          <div>
            <h3>desired (v{s.desired_version})</h3>
            <Json value={s.desired} />
          </div>
          <div>
            <h3>reported (v{s.reported_version})</h3>
            <Json value={s.reported} />
          </div>
          <div>
            <h3>delta</h3>
            <Json value={s.delta} />
          </div>
        </div>
      )}
      <form onSubmit={save} aria-label="edit desired state">
        <label>
          <span>
            Change desired state (JSON Merge Patch: members to set; <code>null</code> removes one)
          </span>
          <textarea
            name="desired_patch"
            rows={4}
            placeholder='{"power": "on"}'
            value={draft}
            onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
          />
        </label>
        <button type="submit" disabled={!draft.trim()}>
          Apply
        </button>
        {saved !== null && <span class="ok"> Saved: desired is now version {saved}.</span>}
        <ErrorBox error={error} />
      </form>
    </div>
  );
}

function Commands(props: { id: string }) {
  const path = `/v1/devices/${seg(props.id)}/commands`;
  const list = usePoll(() => get<Page<Command>>(path, { limit: 20 }), props.id, 2000);
  const [name, setName] = useState("");
  const [params, setParams] = useState("{}");
  const [error, setError] = useState<unknown>(null);
  const send = async (e: Event) => {
    e.preventDefault();
    setError(null);
    let parameters: unknown;
    try {
      parameters = JSON.parse(params || "{}");
    } catch {
      setError(new Error("The parameters are not valid JSON."));
      return;
    }
    try {
      await post<Command>(path, { name: name.trim(), parameters });
      setName("");
      list.reload();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <div class="panel" aria-label="commands">
      <h2>Commands</h2>
      <form class="filters" onSubmit={send} aria-label="send command">
        <label>
          name
          <input name="command_name" value={name} placeholder="reboot" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          parameters (JSON)
          <input name="command_parameters" value={params} onInput={(e) => setParams((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={!name.trim()}>
          Send
        </button>
      </form>
      <ErrorBox error={error} />
      <ErrorBox error={list.error} />
      <table class="list" aria-label="command list">
        <thead>
          <tr>
            <th>command</th>
            <th>status</th>
            <th>sent</th>
            <th>by</th>
            <th>output</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(list.data?.items ?? []).map((c) => (
            <tr data-command={c.id}>
              <td>
                {c.name} <span class="muted">{JSON.stringify(c.parameters)}</span>
              </td>
              <td>
                <span class={`status ${c.status}`}>{c.status}</span>
              </td>
              <td>
                <Time at={c.created_at} />
              </td>
              <td>{c.created_by}</td>
              <td>{c.output === null || c.output === undefined ? "" : JSON.stringify(c.output)}</td>
              <td>
                {(c.status === "queued" || c.status === "delivered") && (
                  <ActionButton label="Cancel" action={() => post(`${path}/${seg(c.id)}/cancel`)} onDone={list.reload} />
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function OtaHistory(props: { id: string }) {
  const history = usePoll(
    () => get<Page<OtaHistoryEntry>>(`/v1/ota/devices/${seg(props.id)}/rollouts`, { limit: 20 }),
    props.id,
    10000,
  );
  return (
    <div class="panel" aria-label="ota history">
      <h2>Firmware updates</h2>
      <ErrorBox error={history.error} />
      {history.data && history.data.items.length === 0 && <p class="muted">Never offered a rollout.</p>}
      {history.data && history.data.items.length > 0 && (
        <table class="list">
          <thead>
            <tr>
              <th>rollout</th>
              <th>from → to</th>
              <th>state</th>
              <th>offered</th>
              <th>updated</th>
            </tr>
          </thead>
          <tbody>
            {history.data.items.map((h) => (
              <tr>
                <td>
                  <Link to={`/rollouts/${encodeURIComponent(h.rollout_id)}`}>{h.rollout_id}</Link>
                </td>
                <td>
                  {h.from_version} → {h.version}
                </td>
                <td>
                  <span class={`status ${h.timed_out ? "failed" : h.state}`}>{h.timed_out ? "timed out" : h.state}</span>
                  {h.error && <span class="muted"> {h.error}</span>}
                </td>
                <td>
                  <Time at={h.offered_at} />
                </td>
                <td>
                  <Time at={h.updated_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function DeviceAudit(props: { id: string }) {
  const audit = usePoll(() => get<Page<AuditEntry>>("/v1/audit", { target: props.id, limit: 20 }), props.id, 10000);
  return (
    <div class="panel" aria-label="device audit">
      <h2>Audit</h2>
      <ErrorBox error={audit.error} />
      <AuditTable items={audit.data?.items ?? []} />
    </div>
  );
}

export function AuditTable(props: { items: AuditEntry[] }) {
  if (props.items.length === 0) return <p class="muted">No entries.</p>;
  return (
    <table class="list" aria-label="audit entries">
      <thead>
        <tr>
          <th>when</th>
          <th>who</th>
          <th>action</th>
          <th>target</th>
          <th>details</th>
        </tr>
      </thead>
      <tbody>
        {props.items.map((a) => (
          <tr>
            <td>
              <Time at={a.at} />
            </td>
            <td>
              {a.actor.role} <span class="muted">{a.actor.name}</span>
            </td>
            <td>{a.action}</td>
            <td>{a.target}</td>
            <td class="details">{JSON.stringify(a.details)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
