// PLACEHOLDER (issue: edge proxy Worker): minimal allowlist + forward so the config bundles.
import allowlist from "./allowlist.json";

interface Env {
  BACKEND_ORIGIN?: string;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const allowed = allowlist.exact.includes(path) || allowlist.prefixes.some((p) => path.startsWith(p));
    if (!allowed || !env.BACKEND_ORIGIN) {
      return new Response(JSON.stringify({ error: { code: "VALIDATION_ERROR", message: "not found", trace_id: "", policy_reason: null } }), {
        status: 404,
        headers: { "content-type": "application/json" },
      });
    }
    return fetch(new URL(path + url.search, env.BACKEND_ORIGIN).toString(), request);
  },
};
