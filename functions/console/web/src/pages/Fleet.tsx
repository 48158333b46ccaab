// The fleet at a glance: devices by status, model and channel; how many were seen
// lately; readings ingested per minute over the last hour. GET /v1/fleet/summary.

import { get, type FleetSummary } from "../api";
import { TimeChart } from "../chart";
import { Counts, ErrorBox, Link, Loading, usePoll } from "../ui";

export function Fleet(props: { tenant: string }) {
  const summary = usePoll(() => get<FleetSummary>("/v1/fleet/summary"), props.tenant);
  const s = summary.data;
  return (
    <section>
      <h1>Fleet</h1>
      <ErrorBox error={summary.error} />
      {!s ? (
        !summary.error && <Loading what="the fleet" />
      ) : (
        <>
          <div class="cards">
            <Card label="devices" value={s.devices.total} />
            <Card label="seen in the last 5 minutes" value={s.seen.last_5m} />
            <Card label="seen in the last hour" value={s.seen.last_1h} />
            <Card label="seen in the last day" value={s.seen.last_24h} />
          </div>
          <TimeChart
            title="Readings ingested per minute, last hour"
            bars
            data={{
              x: s.ingest.minute_readings.map((m) => Date.parse(m.minute) / 1000),
              avg: s.ingest.minute_readings.map((m) => m.readings),
            }}
          />
          <div class="columns">
            <Counts label="status" counts={s.devices.by_status} />
            <Counts label="model" counts={s.devices.by_model} />
            <Counts label="channel" counts={s.devices.by_channel} />
          </div>
          <p>
            <Link to="/devices">All devices →</Link>
          </p>
        </>
      )}
    </section>
  );
}

function Card(props: { label: string; value: number }) {
  return (
    <div class="card">
      <div class="value">{props.value.toLocaleString()}</div>
      <div class="label">{props.label}</div>
    </div>
  );
}
