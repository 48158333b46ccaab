// Small pieces every page uses: links, polling, errors, times, confirmations.
// Everything from the server is rendered as text (JSX escapes it); nothing here sets
// innerHTML, so ids, tags and values that devices choose can never become markup.

import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { BASE, navigate } from "./router";

export function Link(props: { to: string; children: ComponentChildren; class?: string }) {
  return (
    <a
      href={BASE + props.to}
      class={props.class}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        navigate(props.to);
      }}
    >
      {props.children}
    </a>
  );
}

export const REFRESH_MS = 5000;

export interface Polled<T> {
  data: T | undefined;
  error: ApiError | undefined;
  reload: () => void;
}

/**
 * Fetches now and again every `every` ms while the page is visible; a change of `key`
 * starts over. Errors are kept beside the last good data, so a page keeps what it
 * showed when the server goes away, and says so.
 */
export function usePoll<T>(fetcher: () => Promise<T>, key: string, every = REFRESH_MS): Polled<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const generation = useRef(0);
  const fetcherRef = useRef(fetcher);
  fetcherRef.current = fetcher;

  const run = useCallback(async () => {
    const mine = generation.current;
    try {
      const value = await fetcherRef.current();
      if (mine !== generation.current) return;
      setData(value);
      setError(undefined);
    } catch (e) {
      if (mine !== generation.current) return;
      setError(e instanceof ApiError ? e : new ApiError(0, String(e), undefined));
    }
  }, []);

  useEffect(() => {
    generation.current += 1;
    setData(undefined);
    setError(undefined);
    void run();
    const timer = window.setInterval(() => {
      if (document.visibilityState === "visible") void run();
    }, every);
    return () => {
      generation.current += 1;
      window.clearInterval(timer);
    };
  }, [key, every, run]);

  return { data, error, reload: () => void run() };
}

export function ErrorBox(props: { error: unknown }) {
  if (!props.error) return null;
  const e = props.error;
  const text = e instanceof Error ? e.message : String(e);
  const fields = e instanceof ApiError ? e.errors : [];
  return (
    <div class="error" role="alert">
      {text}
      {fields.length > 0 && (
        <ul>
          {fields.map((f) => (
            <li>
              {f.pointer ? `${f.pointer}: ` : ""}
              {f.detail}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading(props: { what?: string }) {
  return <p class="muted">Loading{props.what ? ` ${props.what}` : ""}…</p>;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "medium",
});

export function Time(props: { at: string | null | undefined }) {
  if (!props.at) return <span class="muted">never</span>;
  const date = new Date(props.at);
  return (
    <time dateTime={props.at} title={props.at}>
      {ago(date)}
    </time>
  );
}

export function formatTime(at: string): string {
  return timeFormat.format(new Date(at));
}

export function ago(date: Date): string {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 0) return timeFormat.format(date);
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return timeFormat.format(date);
}

/** A button that runs `action`, showing its error; with `confirm`, asks first. */
export function ActionButton(props: {
  label: string;
  action: () => Promise<unknown>;
  confirm?: string;
  danger?: boolean;
  disabled?: boolean;
  onDone?: () => void;
}) {
  const [busy, setBusy] = useState(false);
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const go = async () => {
    setAsking(false);
    setBusy(true);
    setError(null);
    try {
      await props.action();
      props.onDone?.();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      {asking ? (
        <span class="confirm" role="dialog" aria-label={`Confirm ${props.label}`}>
          <span>{props.confirm}</span>
          <button class="danger" onClick={go}>
            Yes, {props.label.toLowerCase()}
          </button>
          <button onClick={() => setAsking(false)}>Cancel</button>
        </span>
      ) : (
        <button
          class={props.danger ? "danger" : undefined}
          disabled={busy || props.disabled}
          onClick={() => (props.confirm ? setAsking(true) : void go())}
        >
          {busy ? `${props.label}…` : props.label}
        </button>
      )}
      <ErrorBox error={error} />
    </span>
  );
}

export function Json(props: { value: unknown }) {
  return <pre class="json">{JSON.stringify(props.value, null, 2)}</pre>;
}

export function Counts(props: { counts: Record<string, number>; label: string }) {
  const entries = Object.entries(props.counts).sort((a, b) => b[1] - a[1]);
  return (
    <table class="counts" aria-label={props.label}>
      <thead>
        <tr>
          <th>{props.label}</th>
          <th class="num">devices</th>
        </tr>
      </thead>
      <tbody>
        {entries.length === 0 && (
          <tr>
            <td colSpan={2} class="muted">
              none
            </td>
          </tr>
        )}
        {entries.map(([name, n]) => (
          <tr>
            <td>{name}</td>
            <td class="num">{n.toLocaleString()}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
