// One rollout: its progress per stage (offered, in progress, installed, failed and
// timed out, against the halt threshold), and the actions the API allows.

import { get, post, seg, type Rollout as RolloutT } from "../api";
import { ActionButton, ErrorBox, Loading, Time, usePoll } from "../ui";

export function Rollout(props: { tenant: string; id: string }) {
  const path = `/v1/ota/rollouts/${seg(props.id)}`;
  const rollout = usePoll(() => get<RolloutT>(path), `${props.tenant}/${props.id}`);
  const r = rollout.data;
  const act = (action: string) => () => post<RolloutT>(`${path}/${action}`);
  return (
    <section>
      <h1>
        Rollout <span class="id">{props.id}</span>
      </h1>
      <ErrorBox error={rollout.error} />
      {!r ? (
        !rollout.error && <Loading what="the rollout" />
      ) : (
        <>
          <div class="panel" aria-label="rollout">
            <dl class="facts">
              <dt>state</dt>
              <dd>
                <span class={`status ${r.state}`} data-state={r.state}>
                  {r.state}
                </span>
                {r.halt_reason && <span class="muted"> {r.halt_reason}</span>}
              </dd>
              <dt>firmware</dt>
              <dd>
                {r.model} {r.version} ({r.firmware_id})
              </dd>
              <dt>selector</dt>
              <dd>
                channel {r.selector.channel}
                {r.selector.tags?.length ? `, tags ${r.selector.tags.join(", ")}` : ""}
                {r.selector.versions ? `, versions ${r.selector.versions}` : ""}
              </dd>
              <dt>stage</dt>
              <dd>
                {r.stage + 1} of {r.stages.length}: {r.stage_percent}% of the devices
              </dd>
              <dt>failure rate</dt>
              <dd class={(r.failure_rate ?? 0) > r.failure_threshold ? "bad" : undefined}>
                {pct(r.failure_rate ?? 0)} (halts above {pct(r.failure_threshold)}; {r.min_reports} reports before advancing)
              </dd>
              <dt>updated</dt>
              <dd>
                <Time at={r.updated_at} />
              </dd>
            </dl>
            <div class="actions">
              {r.state === "active" && <ActionButton label="Advance" action={act("advance")} onDone={rollout.reload} />}
              {r.state === "active" && (
                <ActionButton
                  label="Pause"
                  confirm="Pausing stops offering this release until it is resumed."
                  action={act("pause")}
                  onDone={rollout.reload}
                />
              )}
              {r.state === "paused" && <ActionButton label="Resume" action={act("resume")} onDone={rollout.reload} />}
              {r.state !== "aborted" && (
                <ActionButton
                  label="Abort"
                  confirm="Aborting ends the rollout for good; devices not yet offered stay on their version."
                  danger
                  action={act("abort")}
                  onDone={rollout.reload}
                />
              )}
            </div>
          </div>
          <div class="panel" aria-label="stages">
            <h2>Progress by stage</h2>
            <table class="list">
              <thead>
                <tr>
                  <th>stage</th>
                  <th class="num">offered</th>
                  <th class="num">in progress</th>
                  <th class="num">installed</th>
                  <th class="num">failed</th>
                  <th class="num">timed out</th>
                  <th>failure rate</th>
                </tr>
              </thead>
              <tbody>
                {r.stages.map((percent, i) => {
                  const c = r.stage_counts?.find((s) => s.stage === i);
                  const outcomes = c ? c.installed + c.failed + c.timed_out : 0;
                  const rate = c && outcomes > 0 ? (c.failed + c.timed_out) / outcomes : 0;
                  const total = c ? c.offered + c.downloading + c.installing + c.installed + c.failed + c.timed_out : 0;
                  return (
                    <tr class={i === r.stage ? "current" : i > r.stage ? "muted" : undefined}>
                      <td>
                        {i + 1}: {percent}%
                      </td>
                      <td class="num">{total}</td>
                      <td class="num">{c ? c.offered + c.downloading + c.installing : 0}</td>
                      <td class="num">{c?.installed ?? 0}</td>
                      <td class="num">{c?.failed ?? 0}</td>
                      <td class="num">{c?.timed_out ?? 0}</td>
                      <td>
                        <meter min={0} max={1} high={r.failure_threshold} value={rate} aria-label={`stage ${i + 1} failure rate`} />{" "}
                        {pct(rate)}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
