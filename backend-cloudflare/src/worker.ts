// Edge proxy Worker: the emergency fallback in front of the container origin (BACKEND_ORIGIN).
//
// It is the last line between the internet and the backend, so it forwards only what it can judge:
// one path, exactly as received, matched case-sensitively against src/allowlist.json. Anything that is
// not already canonical (dot segments in any spelling, encoded or raw slashes/backslashes that could
// be reinterpreted, control bytes, empty segments) is refused rather than repaired, because repairing
// means guessing what the origin will make of it.
import allowlist from "./allowlist.json";

export interface Env {
  BACKEND_ORIGIN?: string;
  BACKEND_REQUEST_TIMEOUT_MS?: string | number;
  BACKEND_RETRY_ATTEMPTS?: string | number;
}

const TIMEOUT_DEFAULT_MS = 15000;
const TIMEOUT_MIN_MS = 1000;
const TIMEOUT_MAX_MS = 60000;
const RETRIES_DEFAULT = 1;
const RETRIES_MIN = 0;
const RETRIES_MAX = 2;
// A percent-encoding nested deeper than this is not a real client's path: refuse instead of looping.
const MAX_DECODE_DEPTH = 3;

const PROXY_NAME = "immcad-backend-proxy";
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS"]);
const RETRY_STATUSES = new Set([502, 503, 504]);
// RFC 9110 §7.6.1 connection-specific headers, plus the legacy ones proxies still see.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
// Forwarding headers a client could forge; the proxy sets its own from what the runtime measured.
const UNTRUSTED_EXACT = new Set(["forwarded", "x-real-ip", "true-client-ip", "host"]);
const UNTRUSTED_PREFIXES = ["x-forwarded-", "x-immcad-"];
const TRACE_ID_RE = /^[A-Za-z0-9-]{8,64}$/;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const HEX_PAIR_RE = /^[0-9A-Fa-f]{2}$/;

const ALLOWED_METHODS = new Set(allowlist.methods);
const EXACT_PATHS = new Set(allowlist.exact);
const PREFIXES: readonly string[] = allowlist.prefixes;

// ------------------------------------------------------------------------------------------- tunables

/** An integer setting: default when missing or not a number, otherwise truncated and clamped. */
function intSetting(raw: unknown, fallback: number, min: number, max: number): number {
  let value: number;
  if (typeof raw === "number") {
    value = raw;
  } else if (typeof raw === "string" && raw.trim() !== "") {
    value = Number(raw.trim());
  } else {
    return fallback;
  }
  if (!Number.isFinite(value)) {
    return fallback;
  }
  return Math.min(max, Math.max(min, Math.trunc(value)));
}

interface Tunables {
  timeoutMs: number;
  retries: number;
}

function tunables(env: Env): Tunables {
  return {
    timeoutMs: intSetting(env.BACKEND_REQUEST_TIMEOUT_MS, TIMEOUT_DEFAULT_MS, TIMEOUT_MIN_MS, TIMEOUT_MAX_MS),
    retries: intSetting(env.BACKEND_RETRY_ATTEMPTS, RETRIES_DEFAULT, RETRIES_MIN, RETRIES_MAX),
  };
}

// ------------------------------------------------------------------------------------------ the path

interface Target {
  path: string;
  query: string; // including the leading "?", or ""
}

/**
 * The path and query exactly as the runtime handed them over, taken from the URL string.
 *
 * Not `new URL(request.url).pathname`: URL parsing resolves `%2e%2e` and backslashes, so the proxy
 * would judge one path and the origin might be sent another.
 */
function splitTarget(url: string): Target | null {
  const schemeEnd = url.indexOf("://");
  if (schemeEnd < 0) {
    return null;
  }
  const pathStart = url.indexOf("/", schemeEnd + 3);
  if (pathStart < 0) {
    return { path: "/", query: "" };
  }
  let rest = url.slice(pathStart);
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    rest = rest.slice(0, hash);
  }
  const q = rest.indexOf("?");
  return q < 0 ? { path: rest, query: "" } : { path: rest.slice(0, q), query: rest.slice(q) };
}

/** Why ``path`` is not canonical (a policy_reason), or null when it may be judged as it is. */
function nonCanonicalReason(path: string): string | null {
  if (!path.startsWith("/")) {
    return "path_not_absolute";
  }
  let level = path;
  // Check the raw path and every percent-decoding of it: a check that only looks at one level is
  // bypassed by encoding the forbidden character once more (`%252e%252e`).
  for (let depth = 0; depth <= MAX_DECODE_DEPTH; depth++) {
    if (CONTROL_RE.test(level)) {
      return "control_character";
    }
    if (level.includes("\\")) {
      return "backslash";
    }
    if (level.includes("//")) {
      return "double_slash";
    }
    if (level.split("/").some((segment) => segment === "." || segment === "..")) {
      return "dot_segment";
    }
    if (!level.includes("%")) {
      return null;
    }
    const pieces = level.split("%").slice(1);
    if (pieces.some((piece) => !HEX_PAIR_RE.test(piece.slice(0, 2)))) {
      return "malformed_percent_encoding";
    }
    if (pieces.some((piece) => ["2f", "5c"].includes(piece.slice(0, 2).toLowerCase()))) {
      return "encoded_slash";
    }
    try {
      level = decodeURIComponent(level);
    } catch {
      return "malformed_percent_encoding"; // invalid UTF-8, e.g. overlong encodings of "." or "/"
    }
  }
  return "nested_percent_encoding";
}

function isAllowlisted(path: string): boolean {
  return EXACT_PATHS.has(path) || PREFIXES.some((prefix) => path.startsWith(prefix));
}

// ----------------------------------------------------------------------------------------- responses

function envelope(status: number, code: string, message: string, traceId: string, reason: string | null): Response {
  const body = JSON.stringify({ error: { code, message, trace_id: traceId, policy_reason: reason } });
  return new Response(body, {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
      "x-trace-id": traceId,
      "x-immcad-trace-id": traceId,
    },
  });
}

function traceIdFor(request: Request): string {
  const ray = request.headers.get("cf-ray") ?? "";
  return TRACE_ID_RE.test(ray) ? ray : crypto.randomUUID();
}

/** Names listed in a Connection header are hop-by-hop for this message as well. */
function connectionScoped(headers: Headers): Set<string> {
  const names = new Set(HOP_BY_HOP);
  for (const token of (headers.get("connection") ?? "").split(",")) {
    const name = token.trim().toLowerCase();
    if (name) {
      names.add(name);
    }
  }
  return names;
}

function upstreamHeaders(request: Request, traceId: string, publicUrl: string): Headers {
  const dropped = connectionScoped(request.headers);
  const headers = new Headers();
  for (const [name, value] of request.headers) {
    const lower = name.toLowerCase();
    if (dropped.has(lower) || UNTRUSTED_EXACT.has(lower) || UNTRUSTED_PREFIXES.some((p) => lower.startsWith(p))) {
      continue;
    }
    headers.append(name, value);
  }
  const client = request.headers.get("cf-connecting-ip");
  if (client) {
    headers.set("x-forwarded-for", client);
  }
  const schemeEnd = publicUrl.indexOf("://");
  const authorityEnd = publicUrl.indexOf("/", schemeEnd + 3);
  headers.set("x-forwarded-proto", publicUrl.slice(0, schemeEnd));
  headers.set("x-forwarded-host", publicUrl.slice(schemeEnd + 3, authorityEnd < 0 ? undefined : authorityEnd));
  headers.set("x-immcad-edge-proxy", PROXY_NAME);
  headers.set("x-immcad-trace-id", traceId);
  return headers;
}

function downstream(upstream: Response, traceId: string): Response {
  const dropped = connectionScoped(upstream.headers);
  const headers = new Headers();
  for (const [name, value] of upstream.headers) {
    if (!dropped.has(name.toLowerCase())) {
      headers.append(name, value);
    }
  }
  headers.set("x-trace-id", traceId);
  headers.set("x-immcad-trace-id", traceId);
  return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers });
}

// -------------------------------------------------------------------------------------------- origin

/** `scheme://host[:port]` of BACKEND_ORIGIN, or why it cannot be used. */
function parseOrigin(raw: string | undefined): { origin: string } | { problem: string } {
  const value = (raw ?? "").trim();
  if (!value) {
    return { problem: "backend_origin_missing" };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: "backend_origin_invalid" };
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { problem: "backend_origin_not_http" };
  }
  // A path, query or credentials would be silently dropped or leaked to the origin's logs: refuse them.
  if (url.username || url.password || url.search || url.hash || (url.pathname !== "/" && url.pathname !== "")) {
    return { problem: "backend_origin_not_an_origin" };
  }
  return { origin: `${url.protocol}//${url.host}` };
}

// ------------------------------------------------------------------------------------------ forward

type Attempt = { response: Response } | { failure: "timeout" | "unreachable"; detail: string };

async function attempt(url: string, init: RequestInit, timeoutMs: number): Promise<Attempt> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return { response: await fetch(url, { ...init, signal: controller.signal }) };
  } catch (error) {
    if (controller.signal.aborted) {
      return { failure: "timeout", detail: `no response within ${timeoutMs} ms` };
    }
    return { failure: "unreachable", detail: error instanceof Error ? error.message : String(error) };
  } finally {
    clearTimeout(timer);
  }
}

function log(level: "log" | "warn", event: string, fields: Record<string, unknown>): void {
  console[level](JSON.stringify({ event, proxy: PROXY_NAME, ...fields }));
}

async function handle(request: Request, env: Env): Promise<Response> {
  const traceId = traceIdFor(request);
  const method = request.method.toUpperCase();
  const target = splitTarget(request.url);
  const reason = target === null ? "path_not_absolute" : nonCanonicalReason(target.path);
  if (target === null || reason !== null) {
    log("log", "refused", { trace_id: traceId, method, reason });
    return envelope(404, "VALIDATION_ERROR", "path is not canonical", traceId, reason);
  }
  if (!isAllowlisted(target.path)) {
    return envelope(404, "VALIDATION_ERROR", "path is not served by this proxy", traceId, "path_not_allowlisted");
  }
  if (!ALLOWED_METHODS.has(method)) {
    return envelope(404, "VALIDATION_ERROR", `method ${method} is not served by this proxy`, traceId, "method_not_allowlisted");
  }
  const origin = parseOrigin(env.BACKEND_ORIGIN);
  if ("problem" in origin) {
    log("warn", "misconfigured", { trace_id: traceId, reason: origin.problem });
    return envelope(500, "PROVIDER_ERROR", "the proxy has no usable BACKEND_ORIGIN", traceId, origin.problem);
  }

  const { timeoutMs, retries } = tunables(env);
  const idempotent = IDEMPOTENT.has(method);
  // Concatenation, not `new URL(path, origin)`: the path is canonical and starts with exactly one "/",
  // so the result cannot name another host; resolving would re-interpret the path.
  const upstreamUrl = origin.origin + target.path + target.query;
  const headers = upstreamHeaders(request, traceId, request.url);
  let body: BodyInit | null = null;
  if (method !== "GET" && method !== "HEAD" && request.body !== null) {
    // A retried request needs its body again; a request sent once can stream it.
    body = idempotent ? await request.arrayBuffer() : request.body;
  }
  const init: RequestInit = { method, headers, body, redirect: "manual" };

  const attempts = idempotent ? 1 + retries : 1;
  let last: Attempt = { failure: "unreachable", detail: "not attempted" };
  for (let n = 1; n <= attempts; n++) {
    last = await attempt(upstreamUrl, init, timeoutMs);
    const retryable = "failure" in last || RETRY_STATUSES.has(last.response.status);
    if (!retryable || n === attempts) {
      break;
    }
    if ("response" in last) {
      await last.response.body?.cancel();
    }
  }
  if ("response" in last) {
    return downstream(last.response, traceId);
  }
  log("warn", "upstream_failed", { trace_id: traceId, method, failure: last.failure, detail: last.detail, attempts });
  return last.failure === "timeout"
    ? envelope(504, "PROVIDER_ERROR", `the backend did not answer within ${timeoutMs} ms`, traceId, "backend_timeout")
    : envelope(502, "PROVIDER_ERROR", "the backend could not be reached", traceId, "backend_unreachable");
}

export default {
  fetch: handle,
} satisfies ExportedHandler<Env>;
