// The REST API as the dashboard calls it: JSON, PNG blobs and the event stream, with the
// API token (when the server asks for one) kept for this browser session.

const TOKEN_KEY = "clara-ray-token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

let asking = null;

// Ask for the token once, however many calls were refused at the same time.
export function askToken(message) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").textContent = message || "";
  asking = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        sessionStorage.setItem(TOKEN_KEY, input.value);
        asking = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
  });
  return asking;
}

async function send(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  const t = token();
  if (t) headers.set("Authorization", `Bearer ${t}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried) {
    await askToken(t ? "That token was refused." : "");
    return send(path, options, true);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, detail);
  }
  return response;
}

export async function getJson(path) {
  return (await send(path)).json();
}

async function sendJson(method, path, body) {
  const options = { method };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  return (await send(path, options)).json();
}

export const postJson = (path, body) => sendJson("POST", path, body);
export const putJson = (path, body) => sendJson("PUT", path, body);

export async function getBlob(path) {
  return (await send(path)).blob();
}

// An EventSource on the event stream; EventSource cannot send headers, so the token
// goes as the access_token parameter (the API accepts it on this route only).
export function events(after) {
  const params = new URLSearchParams();
  if (after !== undefined && after !== null) params.set("after", String(after));
  const t = token();
  if (t) params.set("access_token", t);
  const query = params.toString();
  return new EventSource(`/api/v1/events${query ? `?${query}` : ""}`);
}

// Make sure the token (if the API wants one) is known before the event stream opens; a
// stored token that the server refuses is asked for again by the first call.
export async function signIn(required) {
  if (required && !token()) await askToken("");
  await getJson("/api/v1/pipelines");
}
