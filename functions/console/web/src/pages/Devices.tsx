// The device list: search by id, filters, sort by last seen, pages of 50 (keyset
// cursors, so page 2,000 of 100,000 devices costs what page 1 does).

import { useState } from "preact/hooks";
import { get, type Device, type Page } from "../api";
import { navigate, queryParam } from "../router";
import { ErrorBox, Link, Loading, Time, usePoll } from "../ui";

interface Filters {
  q: string;
  model: string;
  channel: string;
  tag: string;
  status: string;
  sort: string;
}

const FIELDS: (keyof Filters)[] = ["q", "model", "channel", "tag", "status", "sort"];

function fromUrl(): Filters {
  return {
    q: queryParam("q"),
    model: queryParam("model"),
    channel: queryParam("channel"),
    tag: queryParam("tag"),
    status: queryParam("status"),
    sort: queryParam("sort"),
  };
}

export function Devices(props: { tenant: string }) {
  const [filters, setFilters] = useState<Filters>(fromUrl);
  const [draft, setDraft] = useState<Filters>(filters);
  // The cursors of the pages before this one, to go back.
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1];
  const key = JSON.stringify([props.tenant, filters, cursor]);
  const page = usePoll(
    () => get<Page<Device>>("/v1/devices", { ...filters, limit: 50, cursor }),
    key,
  );

  const apply = (e: Event) => {
    e.preventDefault();
    const params = new URLSearchParams();
    for (const f of FIELDS) if (draft[f]) params.set(f, draft[f]);
    const text = params.toString();
    navigate(`/devices${text ? `?${text}` : ""}`, true);
    setFilters(draft);
    setCursors([null]);
  };
  const field = (name: keyof Filters, label: string, placeholder = "") => (
    <label>
      {label}
      <input
        name={name}
        value={draft[name]}
        placeholder={placeholder}
        onInput={(e) => setDraft({ ...draft, [name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );

  return (
    <section>
      <h1>Devices</h1>
      <form class="filters" onSubmit={apply} aria-label="device filters">
        {field("q", "id contains", "e.g. lamp-")}
        {field("model", "model")}
        {field("channel", "channel")}
        {field("tag", "tag")}
        <label>
          status
          <select
            name="status"
            value={draft.status}
            onChange={(e) => setDraft({ ...draft, status: (e.target as HTMLSelectElement).value })}
          >
            <option value="">any</option>
            <option value="active">active</option>
            <option value="disabled">disabled</option>
            <option value="decommissioned">decommissioned</option>
          </select>
        </label>
        <label>
          sort
          <select
            name="sort"
            value={draft.sort}
            onChange={(e) => setDraft({ ...draft, sort: (e.target as HTMLSelectElement).value })}
          >
            <option value="">by id</option>
            <option value="last_seen">last seen first</option>
          </select>
        </label>
        <button type="submit">Search</button>
      </form>
      <ErrorBox error={page.error} />
      {!page.data ? (
        !page.error && <Loading what="devices" />
      ) : (
        <>
          <table class="list" aria-label="devices">
            <thead>
              <tr>
                <th>id</th>
                <th>model</th>
                <th>channel</th>
                <th>tags</th>
                <th>status</th>
                <th>last seen</th>
              </tr>
            </thead>
            <tbody>
              {page.data.items.length === 0 && (
                <tr>
                  <td colSpan={6} class="muted">
                    No devices match.
                  </td>
                </tr>
              )}
              {page.data.items.map((d) => (
                <tr>
                  <td>
                    <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.id}</Link>
                  </td>
                  <td>{d.model}</td>
                  <td>{d.channel}</td>
                  <td>
                    {d.tags.map((t) => (
                      <span class="tag">{t}</span>
                    ))}
                  </td>
                  <td>
                    <span class={`status ${d.status}`}>{d.status}</span>
                  </td>
                  <td>
                    <Time at={d.last_seen} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <div class="pager">
            <button disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              ← Previous
            </button>
            <span class="muted">page {cursors.length}</span>
            <button
              disabled={!page.data.next_cursor}
              onClick={() => setCursors([...cursors, page.data!.next_cursor])}
            >
              Next →
            </button>
          </div>
        </>
      )}
    </section>
  );
}
