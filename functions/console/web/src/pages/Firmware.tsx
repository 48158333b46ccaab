// Firmware releases and rollouts: lists, and forms to create each (the release's
// metadata; a rollout's selector, stages and halt rule).

import { useState } from "preact/hooks";
import { get, post, type Firmware as FirmwareT, type Page, type Rollout } from "../api";
import { navigate } from "../router";
import { ErrorBox, Link, Loading, Time, usePoll } from "../ui";

export function Firmware(props: { tenant: string }) {
  const firmware = usePoll(() => get<Page<FirmwareT>>("/v1/ota/firmware", { limit: 100 }), props.tenant, 15000);
  const rollouts = usePoll(() => get<Page<Rollout>>("/v1/ota/rollouts", { limit: 100 }), props.tenant);
  return (
    <section>
      <h1>Firmware and rollouts</h1>
      <div class="panel" aria-label="rollouts">
        <h2>Rollouts</h2>
        <ErrorBox error={rollouts.error} />
        {!rollouts.data ? (
          !rollouts.error && <Loading />
        ) : rollouts.data.items.length === 0 ? (
          <p class="muted">No rollouts yet.</p>
        ) : (
          <table class="list">
            <thead>
              <tr>
                <th>rollout</th>
                <th>model / channel</th>
                <th>version</th>
                <th>state</th>
                <th>stage</th>
                <th>created</th>
              </tr>
            </thead>
            <tbody>
              {rollouts.data.items.map((r) => (
                <tr>
                  <td>
                    <Link to={`/rollouts/${encodeURIComponent(r.id)}`}>{r.id}</Link>
                  </td>
                  <td>
                    {r.model} / {r.selector.channel}
                  </td>
                  <td>{r.version}</td>
                  <td>
                    <span class={`status ${r.state}`}>{r.state}</span>
                  </td>
                  <td>
                    {r.stage + 1} of {r.stages.length} ({r.stage_percent}%)
                  </td>
                  <td>
                    <Time at={r.created_at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <NewRollout firmware={firmware.data?.items ?? []} />
      </div>
      <div class="panel" aria-label="firmware">
        <h2>Firmware</h2>
        <ErrorBox error={firmware.error} />
        {firmware.data && (
          <table class="list">
            <thead>
              <tr>
                <th>id</th>
                <th>model</th>
                <th>version</th>
                <th class="num">size</th>
                <th>url</th>
                <th>created</th>
              </tr>
            </thead>
            <tbody>
              {firmware.data.items.map((f) => (
                <tr>
                  <td>{f.id}</td>
                  <td>{f.model}</td>
                  <td>{f.version}</td>
                  <td class="num">{f.size.toLocaleString()}</td>
                  <td class="url">{f.url}</td>
                  <td>
                    <Time at={f.created_at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <NewFirmware onDone={firmware.reload} />
      </div>
    </section>
  );
}

function NewFirmware(props: { onDone: () => void }) {
  const empty = { model: "", version: "", url: "https://", sha256: "", size: "", notes: "" };
  const [f, setF] = useState(empty);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const input = (name: keyof typeof empty, label: string, placeholder = "") => (
    <label>
      {label}
      <input
        name={`firmware_${name}`}
        value={f[name]}
        placeholder={placeholder}
        onInput={(e) => setF({ ...f, [name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setDone(null);
    try {
      const created = await post<FirmwareT>("/v1/ota/firmware", {
        model: f.model.trim(),
        version: f.version.trim(),
        url: f.url.trim(),
        sha256: f.sha256.trim().toLowerCase(),
        size: Number(f.size),
        ...(f.notes.trim() ? { notes: f.notes.trim() } : {}),
      });
      setDone(created.id);
      setF(empty);
      props.onDone();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <form class="create" onSubmit={submit} aria-label="new firmware">
      <h3>New release</h3>
      {input("model", "model")}
      {input("version", "version", "1.2.0")}
      {input("url", "download URL")}
      {input("sha256", "SHA-256 (hex)")}
      {input("size", "size (bytes)")}
      {input("notes", "notes")}
      <button type="submit">Create release</button>
      {done && <span class="ok"> Created {done}.</span>}
      <ErrorBox error={error} />
    </form>
  );
}

function NewRollout(props: { firmware: FirmwareT[] }) {
  const [firmwareId, setFirmwareId] = useState("");
  const [channel, setChannel] = useState("");
  const [tags, setTags] = useState("");
  const [versions, setVersions] = useState("*");
  const [stages, setStages] = useState<number[]>([1, 10, 50, 100]);
  const [threshold, setThreshold] = useState("0.05");
  const [minReports, setMinReports] = useState("10");
  const [timeout, setTimeoutSecs] = useState("3600");
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    const selector: Record<string, unknown> = { channel: channel.trim(), versions: versions.trim() };
    const tagList = tags.split(",").map((t) => t.trim()).filter(Boolean);
    if (tagList.length) selector.tags = tagList;
    try {
      const created = await post<Rollout>("/v1/ota/rollouts", {
        firmware_id: firmwareId,
        selector,
        stages,
        failure_threshold: Number(threshold),
        min_reports: Number(minReports),
        report_timeout_secs: Number(timeout),
      });
      navigate(`/rollouts/${encodeURIComponent(created.id)}`);
    } catch (err) {
      setError(err);
    }
  };
  return (
    <form class="create" onSubmit={submit} aria-label="new rollout">
      <h3>New rollout</h3>
      <label>
        firmware
        <select name="rollout_firmware" value={firmwareId} onChange={(e) => setFirmwareId((e.target as HTMLSelectElement).value)}>
          <option value="">choose a release</option>
          {props.firmware.map((f) => (
            <option value={f.id}>
              {f.model} {f.version} ({f.id})
            </option>
          ))}
        </select>
      </label>
      <label>
        channel
        <input name="rollout_channel" value={channel} onInput={(e) => setChannel((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        <span>
          from versions (a requirement: <code>*</code>, <code>^1.3</code>, <code>&gt;=1.2.0, &lt;1.4.0</code>)
        </span>
        <input name="rollout_versions" value={versions} onInput={(e) => setVersions((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        tags (comma-separated, all required)
        <input name="rollout_tags" value={tags} onInput={(e) => setTags((e.target as HTMLInputElement).value)} />
      </label>
      <fieldset class="stages">
        <legend>stages (% of the selected devices, growing)</legend>
        {stages.map((p, i) => (
          <span class="stage">
            <input
              type="number"
              min={1}
              max={100}
              aria-label={`stage ${i + 1} percent`}
              value={p}
              onInput={(e) => {
                const next = [...stages];
                next[i] = Number((e.target as HTMLInputElement).value);
                setStages(next);
              }}
            />
            %
            <button type="button" aria-label={`remove stage ${i + 1}`} disabled={stages.length === 1} onClick={() => setStages(stages.filter((_, j) => j !== i))}>
              ×
            </button>
          </span>
        ))}
        <button type="button" disabled={stages.length >= 20} onClick={() => setStages([...stages, 100])}>
          + stage
        </button>
      </fieldset>
      <label>
        halt when failures exceed (0-1)
        <input name="rollout_threshold" value={threshold} onInput={(e) => setThreshold((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        reports before advancing
        <input name="rollout_min_reports" value={minReports} onInput={(e) => setMinReports((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        report timeout (s)
        <input name="rollout_timeout" value={timeout} onInput={(e) => setTimeoutSecs((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" disabled={!firmwareId}>
        Start rollout
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
