// Paths under /console/ (the component answers index.html for each), with the
// history API: links are real links, and back/forward work.

import { signal } from "./signal";

export const BASE = "/console";

const current = () => window.location.pathname.replace(/^\/console/, "") || "/";

export const route = signal<string>(current());
export const search = signal<string>(window.location.search);

window.addEventListener("popstate", () => {
  route.value = current();
  search.value = window.location.search;
});

export function navigate(to: string, replace = false): void {
  const url = BASE + to;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route.value = current();
  search.value = window.location.search;
  window.scrollTo(0, 0);
}

/** The route's segments, decoded: `/devices/a%2Fb` → ["devices", "a/b"]. */
export function segments(path: string): string[] {
  return path
    .split("/")
    .filter(Boolean)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
}

export function queryParam(name: string): string {
  return new URLSearchParams(search.value).get(name) ?? "";
}
