// Sign in with an operator or admin token (`toaster token`, or the link `toaster up`
// prints, which carries the token in the URL fragment and signs in by itself).

import { useState } from "preact/hooks";
import { signIn, signInMessage } from "../session";
import { useSignal } from "../signal";

export function SignIn() {
  const message = useSignal(signInMessage);
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(token);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>Toaster console</h1>
      {message && (
        <p class="notice" role="status">
          {message}
        </p>
      )}
      <form onSubmit={submit} aria-label="sign in">
        <label>
          Access token (operator or tenant admin)
          <textarea
            name="token"
            rows={4}
            autoComplete="off"
            spellcheck={false}
            value={token}
            onInput={(e) => setToken((e.target as HTMLTextAreaElement).value)}
          />
        </label>
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
      <p class="muted">
        The token stays in this browser tab (sessionStorage) until you sign out or close the tab. Get one with{" "}
        <code>toaster token --role operator</code> or from the link <code>toaster up</code> prints.
      </p>
    </main>
  );
}
