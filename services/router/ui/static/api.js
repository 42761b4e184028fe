// The UI's client of the registry API: the same requests, and the same
// token flow, as `docker` makes.
//
// A request goes out with the token held for its scope, if any. A 401 names
// a Bearer realm, service and scope (WWW-Authenticate); the client asks the
// realm for a token with the user's credentials (HTTP Basic, as `docker
// login` does) and sends the request once more. Credentials and tokens live
// in sessionStorage: this tab only, gone when it closes or on sign-out.
// The page's own token is also put in a SameSite=Strict cookie limited to
// /ui, so the server-rendered pages read with the same identity; the
// registry API never reads that cookie.

const CREDENTIALS = "dockyard.credentials";
const TOKENS = "dockyard.tokens";
const TOKEN_COOKIE = "dockyard_ui_token";

let prompt = async () => null;

/** Sets the function that asks the user to sign in: resolves {user, password} or null. */
export function setCredentialPrompt(fn) {
  prompt = fn;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `the registry answered ${status}`);
    this.status = status;
    this.code = code;
  }
}

function load(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

function save(key, value) {
  sessionStorage.setItem(key, JSON.stringify(value));
}

export function signedInUser() {
  const creds = load(CREDENTIALS);
  return creds ? creds.user : null;
}

export function signOut() {
  sessionStorage.removeItem(CREDENTIALS);
  sessionStorage.removeItem(TOKENS);
  document.cookie = `${TOKEN_COOKIE}=; Path=/ui; Max-Age=0; SameSite=Strict`;
}

/** Parses `Bearer realm="...",service="...",scope="..."` into its parameters. */
export function parseChallenge(header) {
  const match = /^\s*(\w+)\s+(.*)$/s.exec(header || "");
  if (!match) return null;
  const params = { scheme: match[1].toLowerCase() };
  const re = /(\w+)="([^"]*)"|(\w+)=([^,\s]*)/g;
  let m;
  while ((m = re.exec(match[2])) !== null) {
    params[(m[1] || m[3]).toLowerCase()] = m[2] !== undefined ? m[2] : m[4];
  }
  return params.scheme === "bearer" && params.realm ? params : null;
}

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** What a token grants, from its JWT claims; null when the token is opaque. */
export function grantedActions(token, type, name) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    if (!Array.isArray(claims.access)) return null;
    const actions = new Set();
    for (const entry of claims.access) {
      if (entry.type === type && (entry.name === name || entry.name === "*")) {
        for (const action of entry.actions || []) actions.add(action);
      }
    }
    return actions;
  } catch {
    return null;
  }
}

/** Asks the challenge's realm for a token covering `scopes`, with the stored credentials. */
async function obtainToken(challenge, scopes, askIfNeeded) {
  let creds = load(CREDENTIALS);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    if (!creds) {
      if (!askIfNeeded) return null;
      const given = await prompt(attempt > 0);
      if (!given) return null;
      creds = { user: given.user, basic: basic(given.user, given.password) };
    }
    const url = new URL(challenge.realm, location.href);
    if (challenge.service) url.searchParams.set("service", challenge.service);
    for (const scope of scopes) if (scope) url.searchParams.append("scope", scope);
    const r = await fetch(url, { headers: { Authorization: `Basic ${creds.basic}` },
                                 credentials: "omit", cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      sessionStorage.removeItem(CREDENTIALS);
      creds = null;
      continue;
    }
    if (!r.ok) throw new ApiError(r.status, "TOKEN", `the token service answered ${r.status}`);
    const body = await r.json();
    const token = body.token || body.access_token;
    if (!token) throw new ApiError(r.status, "TOKEN", "the token service sent no token");
    save(CREDENTIALS, { ...creds, realm: challenge.realm, service: challenge.service || "" });
    const tokens = load(TOKENS) || {};
    tokens[scopes.join(" ")] = token;
    save(TOKENS, tokens);
    return token;
  }
  return null;
}

/** A token for `scopes` from the stored sign-in, without asking the user. */
export async function tokenFor(scopes) {
  const tokens = load(TOKENS) || {};
  if (tokens[scopes.join(" ")]) return tokens[scopes.join(" ")];
  const creds = load(CREDENTIALS);
  if (!creds || !creds.realm) return null;
  return obtainToken({ realm: creds.realm, service: creds.service }, scopes, false);
}

/** Signs in for a page that the server could not render, and keeps its token in the cookie. */
export async function signInFor(challengeHeader, extraScopes, askIfNeeded) {
  const challenge = parseChallenge(challengeHeader);
  if (!challenge) return false;
  const scopes = [challenge.scope, ...extraScopes].filter(Boolean);
  const token = await obtainToken(challenge, [...new Set(scopes)], askIfNeeded);
  if (!token) return false;
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${TOKEN_COOKIE}=${token}; Path=/ui; SameSite=Strict${secure}`;
  return true;
}

async function errorOf(r) {
  let code = "";
  let message = "";
  try {
    const first = (await r.json()).errors[0];
    code = first.code;
    message = first.message;
  } catch {
    // Not an OCI error body: the status says enough.
  }
  return new ApiError(r.status, code, message);
}

/**
 * One request to the registry API. `scopes` are what it needs (as in a token
 * request); a 401 fetches a token for the challenge and tries once more.
 */
export async function request(method, path, { scopes = [], accept = "application/json" } = {}) {
  const send = (token) => fetch(path, {
    method,
    headers: { Accept: accept, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    credentials: "omit",
    cache: "no-store",
  });
  const known = (load(TOKENS) || {})[scopes.join(" ")];
  let r = await send(known);
  if (r.status === 401) {
    const challenge = parseChallenge(r.headers.get("WWW-Authenticate"));
    if (challenge) {
      const wanted = [...new Set([challenge.scope, ...scopes].filter(Boolean))];
      const token = await obtainToken(challenge, wanted, true);
      if (token) {
        const tokens = load(TOKENS) || {};
        tokens[scopes.join(" ")] = token;
        save(TOKENS, tokens);
        r = await send(token);
      }
    }
  }
  if (!r.ok) throw await errorOf(r);
  return r;
}

export async function getJson(path, options) {
  return (await request("GET", path, options)).json();
}
