// The UI's behaviour on top of the server-rendered pages: instant filtering,
// one-click copy, signing in and out, and deleting with a confirmation.
// Everything the registry sent is put in the page as text (textContent,
// setAttribute), never as HTML.

import {
  ApiError, getJson, grantedActions, parseChallenge, request, setCredentialPrompt,
  signInFor, signOut, signedInUser, tokenFor,
} from "./api.js";

const body = document.body;
const repo = body.dataset.repo || "";
const FLASH = "dockyard.flash";
const RETRIED = "dockyard.retried";

function say(text, kind = "info") {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- formatting, as the server renders it (templates.py) ---------------------

export function formatSize(n) {
  if (typeof n !== "number") return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatAge(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  const spans = [[31536000, "year"], [2592000, "month"], [86400, "day"], [3600, "hour"],
                 [60, "minute"]];
  for (const [span, unit] of spans) {
    if (seconds >= span) {
      const count = Math.floor(seconds / span);
      return `${count} ${unit}${count > 1 ? "s" : ""} ago`;
    }
  }
  return "just now";
}

// -- copy --------------------------------------------------------------------

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP origins other than localhost have no clipboard API.
  const area = el("textarea", { readonly: "", class: "offscreen" });
  area.value = text;
  body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function setUpCopy(root = document) {
  for (const button of root.querySelectorAll("button.copy")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const label = button.textContent;
      try {
        await copyText(button.dataset.copy);
        button.textContent = "Copied";
        say(`Copied: ${button.dataset.copy}`);
      } catch {
        say("Copying failed; select the text and copy it yourself.", "error");
      }
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }
}

// -- signing in ----------------------------------------------------------------

function askCredentials(failed) {
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  document.getElementById("login-error").textContent =
    failed ? "Those credentials were not accepted." : "";
  form.reset();
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "login") {
        resolve(null);
        return;
      }
      resolve({ user: form.elements.username.value, password: form.elements.password.value });
    }, { once: true });
  });
}

// Every sign-in also asks for the usage scope: the token endpoint grants it
// to administrators only (others get a token without it), so an
// administrator's page token reads /ui/usage with no second sign-in.
function pageScopes() {
  return [repo ? `repository:${repo}:pull` : "", "registry:catalog:*", "registry:usage:*"]
    .filter(Boolean);
}

async function setUpSession() {
  const area = document.getElementById("session");
  const user = signedInUser();
  if (user) {
    const out = el("button", { type: "button", id: "sign-out" }, "Sign out");
    out.addEventListener("click", () => {
      signOut();
      location.reload();
    });
    area.replaceChildren(el("span", {}, "Signed in as ", el("strong", {}, user)), " ", out);
    return;
  }
  // Whether this registry asks for sign-in at all: the version check says.
  const probe = await fetch("/v2/", { credentials: "omit", cache: "no-store" });
  const challenge = probe.status === 401 ? probe.headers.get("WWW-Authenticate") : null;
  if (!parseChallenge(challenge)) return;
  const signIn = el("button", { type: "button", id: "sign-in" }, "Sign in");
  signIn.addEventListener("click", async () => {
    if (await signInFor(challenge, pageScopes(), true)) location.reload();
  });
  area.replaceChildren(signIn);
}

async function handleAuthRequired() {
  const section = document.getElementById("auth-required");
  if (!section) {
    sessionStorage.removeItem(RETRIED);
    return;
  }
  // One silent try with the stored sign-in per page: if the page still says
  // 401 after it, that sign-in does not reach it, and reloading would loop.
  if (sessionStorage.getItem(RETRIED) === location.href && signedInUser()) {
    sessionStorage.removeItem(RETRIED);
    say(`Signed in as ${signedInUser()}, you may not see this page.`, "warn");
    return;
  }
  sessionStorage.setItem(RETRIED, location.href);
  if (await signInFor(section.dataset.challenge, pageScopes(), !signedInUser())) {
    location.reload();
  }
}

// -- the home page's instant filter -----------------------------------------------

function repositoryRows(repositories) {
  return repositories.map((r) => el("tr", {},
    el("th", { scope: "row" }, el("a", { href: `/ui/r/${r.name}` }, r.name)),
    el("td", { class: "description" }, r.description || ""),
    el("td", { class: "num" }, Number(r.tags).toLocaleString("en")),
    el("td", { class: "num", title: `${r.size} bytes` }, formatSize(r.size)),
    el("td", {}, el("time", { datetime: r.pushed || "", title: r.pushed || "" },
                   formatAge(r.pushed)))));
}

function setUpFilter() {
  const input = document.getElementById("q");
  const listing = document.getElementById("listing");
  const pager = document.getElementById("pager");
  if (!input || !listing) return;
  let sequence = 0;
  let timer = null;

  async function refresh() {
    const query = input.value.trim();
    const mine = ++sequence;
    let repositories;
    let total = null;
    let more = false;
    try {
      if (query) {
        const found = await getJson(`/v1/search?${new URLSearchParams({ q: query, n: 50 })}`,
                                    { scopes: ["registry:catalog:*"] });
        total = found.num_results;
        more = found.num_pages > 1;
        const names = found.results.map((r) => r.name);
        const params = new URLSearchParams(names.map((n) => ["name", n]));
        repositories = names.length
          ? (await getJson(`/v2/_dockyard/repositories?${params}`)).repositories : [];
      } else {
        const r = await request("GET", "/v2/_dockyard/repositories?n=50");
        more = (r.headers.get("Link") || "").includes('rel="next"');
        repositories = (await r.json()).repositories;
      }
    } catch (e) {
      if (mine === sequence) say(`Filtering failed: ${e.message}`, "error");
      return;
    }
    if (mine !== sequence) return; // a newer keystroke's answer wins
    const parts = [];
    if (total !== null) {
      parts.push(el("p", { class: "count", id: "count", role: "status" },
        `${total.toLocaleString("en")} repositor${total === 1 ? "y" : "ies"} match`));
    }
    if (repositories.length) {
      const head = el("tr", {}, ...["Name", "Description", "Tags", "Size", "Last push"].map(
        (label) => el("th", { scope: "col", class: ["Tags", "Size"].includes(label) ? "num" : "" },
                      label)));
      parts.push(el("div", { class: "scroll" }, el("table", { id: "repos" },
        el("caption", {}, "Repositories"), el("thead", {}, head),
        el("tbody", {}, ...repositoryRows(repositories)))));
    } else {
      parts.push(el("p", { class: "empty" },
                    query ? "No repository matches." : "No repositories yet."));
    }
    listing.replaceChildren(...parts);
    const next = query
      ? `/ui/?${new URLSearchParams({ q: query, page: 2 })}`
      : `/ui/?${new URLSearchParams({ last: repositories.length
          ? repositories[repositories.length - 1].name : "" })}`;
    pager.replaceChildren(...(more ? [el("a", { rel: "next", href: next }, "Next page")] : []));
    history.replaceState(null, "", query ? `/ui/?${new URLSearchParams({ q: query })}` : "/ui/");
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  });
  input.form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    refresh();
  });
}

// -- deleting -------------------------------------------------------------------

function confirmDelete(title, text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"),
                            { once: true });
  });
}

function hideDeletes(reason) {
  for (const button of document.querySelectorAll("button.delete")) button.hidden = true;
  if (reason) say(reason, "warn");
}

async function mayDelete() {
  if (!signedInUser()) return true; // no sign-in: the API decides when asked
  const token = await tokenFor([`repository:${repo}:pull,delete`]).catch(() => null);
  const actions = token ? grantedActions(token, "repository", repo) : null;
  return actions === null || actions.has("delete") || actions.has("*");
}

async function remove(button) {
  const { kind, reference } = button.dataset;
  const text = kind === "tag"
    ? `This removes the tag “${reference}” from ${repo}. The manifest it points to stays, `
      + "as do other tags."
    : `This removes ${button.dataset.describe}.`;
  const title = kind === "tag" ? `Delete tag ${reference}?` : "Delete manifest?";
  if (!(await confirmDelete(title, text))) return;
  try {
    await request("DELETE", `/v2/${repo}/manifests/${reference}`,
                  { scopes: [`repository:${repo}:pull,delete`] });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && !signedInUser()) {
      say(`Deleting in ${repo} needs you to sign in.`, "warn");
    } else if (e instanceof ApiError && (e.status === 403 || e.status === 401)) {
      hideDeletes(`You may not delete in ${repo}.`);
    } else if (e instanceof ApiError && e.status === 405) {
      hideDeletes("This registry does not allow deleting.");
    } else {
      say(`Deleting failed: ${e.message}`, "error");
    }
    return;
  }
  if (kind === "tag") {
    const row = button.closest("tr");
    if (row) row.remove();
    say(`Deleted tag ${reference} from ${repo}.`);
  } else {
    sessionStorage.setItem(FLASH, `Deleted manifest ${reference} from ${repo}.`);
    location.assign(`/ui/r/${repo}`);
  }
}

async function setUpDeletes() {
  const buttons = [...document.querySelectorAll("button.delete")];
  if (!buttons.length || !(await mayDelete())) return;
  for (const button of buttons) {
    button.hidden = false;
    button.addEventListener("click", () => remove(button));
  }
}

// -- start -------------------------------------------------------------------------

setCredentialPrompt(askCredentials);
const flash = sessionStorage.getItem(FLASH);
if (flash) {
  sessionStorage.removeItem(FLASH);
  say(flash);
}
setUpCopy();
setUpFilter();
const failed = (e) => say(`Something failed: ${e.message}`, "error");
// Ready (for people and tests alike) once set up; a sign-in form may still be open.
Promise.all([setUpSession(), setUpDeletes()]).catch(failed).finally(() => {
  body.dataset.ready = "1";
});
handleAuthRequired().catch(failed);
