// The console's shell: sign-in, the operator's tenant choice, navigation, the
// "server unreachable" banner, and the page for the current path.

import { render } from "preact";
import { unreachable } from "./api";
import { Audit } from "./pages/Audit";
import { Device } from "./pages/Device";
import { Devices } from "./pages/Devices";
import { Firmware } from "./pages/Firmware";
import { Fleet } from "./pages/Fleet";
import { Rollout } from "./pages/Rollout";
import { SignIn } from "./pages/SignIn";
import { Tenants } from "./pages/Tenants";
import { navigate, route, segments } from "./router";
import { currentTenant, leaveTenant, session, signIn, signOut, tenant, tokenFromFragment } from "./session";
import { useSignal } from "./signal";
import { Link } from "./ui";
import "./style.css";

function Page(props: { tenant: string; path: string }) {
  const [first, second] = segments(props.path);
  switch (first) {
    case undefined:
      return <Fleet tenant={props.tenant} />;
    case "devices":
      return second ? <Device tenant={props.tenant} id={second} /> : <Devices tenant={props.tenant} />;
    case "firmware":
      return <Firmware tenant={props.tenant} />;
    case "rollouts":
      return second ? <Rollout tenant={props.tenant} id={second} /> : <Firmware tenant={props.tenant} />;
    case "audit":
      return <Audit tenant={props.tenant} />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>
            The console has no page here. <Link to="/">Go to the fleet.</Link>
          </p>
        </section>
      );
  }
}

function App() {
  const s = useSignal(session);
  const path = useSignal(route);
  useSignal(tenant);
  const down = useSignal(unreachable);
  if (!s) return <SignIn />;
  const current = currentTenant();
  const nav = (to: string, label: string) => (
    <Link to={to} class={(to === "/" ? path === "/" : path.startsWith(to)) ? "on" : undefined}>
      {label}
    </Link>
  );
  return (
    <>
      <header>
        <span class="brand">Toaster</span>
        {current && (
          <nav aria-label="pages">
            {nav("/", "Fleet")}
            {nav("/devices", "Devices")}
            {nav("/firmware", "Firmware & rollouts")}
            {nav("/audit", "Audit")}
          </nav>
        )}
        <span class="who">
          {s.me.role} <strong>{s.me.subject}</strong>
          {current && (
            <>
              {" "}
              · tenant <strong data-tenant={current}>{current}</strong>
            </>
          )}
          {s.me.role === "operator" && current && (
            <button
              onClick={() => {
                leaveTenant();
                navigate("/");
              }}
            >
              Switch tenant
            </button>
          )}
          <button onClick={() => signOut("You have signed out.")}>Sign out</button>
        </span>
      </header>
      {down && (
        <div class="banner" role="alert">
          The server cannot be reached (or is unavailable). Showing the last data; retrying every few seconds.
        </div>
      )}
      <main>{current ? <Page tenant={current} path={path} /> : <Tenants />}</main>
    </>
  );
}

/** A sign-in link opened in a tab that already shows the console changes only the fragment. */
window.addEventListener("hashchange", () => {
  const token = tokenFromFragment();
  if (token) signIn(token).catch((e) => signOut(e instanceof Error ? e.message : String(e)));
});

async function start() {
  const fromLink = tokenFromFragment();
  if (fromLink) {
    try {
      await signIn(fromLink);
    } catch (e) {
      signOut(e instanceof Error ? e.message : String(e));
    }
  } else if (session.value) {
    // A stored token may have expired while the tab was closed.
    const left = Date.parse(session.value.me.expires_at) - Date.now();
    if (!(left > 0)) signOut("Your session has expired. Sign in again.");
  }
  render(<App />, document.getElementById("app")!);
}

void start();
