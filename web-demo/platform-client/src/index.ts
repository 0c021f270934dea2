/**
 * Typed client of the Dartmouth platform sidecar (`/v1/…`), shaped like the seed's
 * `DartmouthClient`: `auth.login`, `db.insert`, `storage.upload`, …
 *
 * ```ts
 * const dartmouth = new DartmouthClient({ baseUrl: "http://127.0.0.1:8081", agentId: "mccarthy-pa" });
 * const { user, token } = await dartmouth.auth.login({ email, password });
 * await dartmouth.db.insert("tasks", { userId: user.id, title: "Follow up with client" });
 * ```
 */

export type Role = "admin" | "developer" | "agent" | "user";
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface ClientOptions {
  /** Sidecar base URL, e.g. `http://127.0.0.1:8081` (default: same origin). */
  baseUrl?: string;
  /** An agent/service API key (`dk_…`); used when no user is logged in. */
  apiKey?: string;
  /** The agent whose data `db` and `storage` address. */
  agentId?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

export interface User { id: string; email?: string; role: Role }
export interface Session { user: User; token: string; refreshToken: string; expiresIn: number }
export interface WhoAmI { kind: "user" | "api_key"; id: string; role: Role; agent_id: string | null; scopes: string[] }
export interface Document<T extends JsonObject = JsonObject> { id: string; agent_id: string; collection: string; data: T; created_at: number; updated_at: number }
export interface QueryOptions { limit?: number; offset?: number }
export interface FileInfo { agent_id: string; key: string; content_type: string; size: number; sha256: string; owner_user_id: string | null; created_at: number }
export type Health = "healthy" | "degraded" | "down";
export interface RegisteredAgent { id: string; name: string; capabilities: string[]; endpoint: string; version: string; heartbeat_interval_ms: number; capacity: number; active: number; health: Health; registered_at: number; last_heartbeat: number }
export interface AgentRegistration { name: string; capabilities: string[]; endpoint: string; version?: string; heartbeat_interval_ms?: number; capacity?: number }
export interface MemoryEntry<T extends Json = Json> { namespace: string; key: string; value: T; expires_at: number | null; created_at: number; updated_at: number; updated_by: string }
export interface MemoryKeyPage { keys: { key: string; size: number; expires_at: number | null; updated_at: number }[]; next_after: string | null }
export interface MemoryGrant { principal: string; access: "read" | "write"; granted_by: string; created_at: number }
export interface Fact { id: string; namespace: string; text: string; metadata: JsonObject; expires_at: number | null; created_at: number; created_by: string }
export interface ScoredFact { score: number; fact: Fact }
export type Channel = "email" | "sms" | "push";
export interface NotificationPreferences { channels: Channel[]; email?: string | null; phone?: string | null; push_token?: string | null }
export interface NotificationTemplate { name: string; subject: string; body: string; variables: string[]; updated_at: number }
export interface SendNotification { user_id: string; channel: Channel; template?: string; subject?: string; body?: string; variables?: { [name: string]: string } }
/** One recorded attempt: `sent`, `failed` (the provider failed) or `refused` (opted out). */
export interface Notification { id: string; user_id: string; channel: Channel; status: string; detail: string; at: number }
export interface ApiKeyCreated { key: string; info: { id: string; name: string; role: Role; agent_id: string | null; scopes: string[] } }

/** Every failure: the sidecar's `{"error": {"code", "message", "request_id"}}` plus the status. */
export class DartmouthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string,
  ) {
    super(message);
    this.name = "DartmouthError";
  }
}

const segment = (s: string) => encodeURIComponent(s);
/** `?a=1&b=x` of the defined values (empty when none). */
const query = (params: { [name: string]: string | number | undefined }): string => {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${segment(String(v))}`);
  return pairs.length ? `?${pairs.join("&")}` : "";
};

interface TokenPair { access_token: string; refresh_token: string; expires_in: number; user_id: string; role: Role }

export class DartmouthClient {
  readonly baseUrl: string;
  readonly agentId?: string;
  private readonly apiKey?: string;
  private readonly fetchImpl: typeof fetch;
  private session?: Session;

  /** Authentication: login, register, refresh, logout, me, room tokens. */
  readonly auth = {
    /** Log in; later calls carry the access token. */
    login: async (credentials: { email: string; password: string }): Promise<Session> => {
      const pair = await this.request<TokenPair>("POST", "/v1/auth/login", credentials, false);
      return this.adopt(pair, credentials.email);
    },
    /** Open registration of a `user` account. */
    register: (credentials: { email: string; password: string }): Promise<User> =>
      this.request<User>("POST", "/v1/auth/register", credentials, false),
    /** Rotate the refresh token (done automatically once on a 401). */
    refresh: async (): Promise<Session> => {
      if (!this.session) throw new DartmouthError(401, "unauthenticated", "not logged in", "");
      const pair = await this.request<TokenPair>("POST", "/v1/auth/refresh", { refresh_token: this.session.refreshToken }, false);
      return this.adopt(pair, this.session.user.email);
    },
    /** End the session on the server and forget it here. */
    logout: async (): Promise<void> => {
      try {
        await this.request<void>("POST", "/v1/auth/logout");
      } finally {
        this.session = undefined;
      }
    },
    /** Who the current credential is. */
    me: (): Promise<WhoAmI> => this.request<WhoAmI>("GET", "/v1/auth/me"),
    /** A gateway room token for the logged-in user. */
    roomToken: (room: string, canPublish = true): Promise<{ token: string; expires_at: number }> =>
      this.request("POST", "/v1/room-tokens", { room, can_publish: canPublish }),
    /** The current session, if logged in. */
    session: (): Session | undefined => this.session,
  };

  /** The agent's documents: `db.insert('tasks', {...})` and friends. */
  readonly db = {
    insert: <T extends JsonObject>(collection: string, doc: T, opts: { encrypt?: string[] } = {}): Promise<Document<T>> => {
      const query = opts.encrypt?.length ? `?encrypt=${segment(opts.encrypt.join(","))}` : "";
      return this.request("POST", `${this.dbPath(collection)}${query}`, doc);
    },
    get: <T extends JsonObject>(collection: string, id: string): Promise<Document<T>> =>
      this.request("GET", `${this.dbPath(collection)}/${segment(id)}`),
    query: async <T extends JsonObject>(collection: string, filter: { [field: string]: string | number | boolean | null } = {}, opts: QueryOptions = {}): Promise<Document<T>[]> => {
      const result = await this.request<{ documents: Document<T>[] }>("POST", `${this.dbPath(collection)}/query`, { filter, ...opts });
      return result.documents;
    },
    update: <T extends JsonObject>(collection: string, id: string, patch: JsonObject): Promise<Document<T>> =>
      this.request("PATCH", `${this.dbPath(collection)}/${segment(id)}`, patch),
    delete: (collection: string, id: string): Promise<void> => this.request("DELETE", `${this.dbPath(collection)}/${segment(id)}`),
    /** Let another agent read or write one of this agent's collections (`*` for all). */
    grant: (granteeAgent: string, collection: string, access: "read" | "write"): Promise<void> =>
      this.request("PUT", `/v1/agents/${segment(this.requireAgent())}/grants`, { grantee_agent: granteeAgent, collection, access }),
  };

  /** The agent's files. */
  readonly storage = {
    upload: (key: string, body: Blob | ArrayBuffer | Uint8Array | string, contentType: string, opts: { userId?: string } = {}): Promise<FileInfo> => {
      const query = opts.userId ? `?user_id=${segment(opts.userId)}` : "";
      return this.request("PUT", `${this.filePath(key)}${query}`, undefined, true, { body: body as BodyInit, contentType });
    },
    download: async (key: string): Promise<Blob> => {
      const response = await this.raw("GET", this.filePath(key));
      return response.blob();
    },
    list: (): Promise<FileInfo[]> => this.request("GET", `/v1/agents/${segment(this.requireAgent())}/files`),
    delete: (key: string): Promise<void> => this.request("DELETE", this.filePath(key)),
    /** An absolute, time-limited URL that needs no credential. */
    signedUrl: async (key: string, expiresIn?: number): Promise<{ url: string; expires_at: number }> => {
      const signed = await this.request<{ url: string; expires_at: number }>("POST", `${this.filePath(key)}/signed-url`, expiresIn ? { expires_in: expiresIn } : {});
      return { ...signed, url: this.baseUrl + signed.url };
    },
  };

  /** API keys for agents and services. */
  readonly apiKeys = {
    create: (req: { name: string; agent_id?: string; role?: Role; scopes?: string[] }): Promise<ApiKeyCreated> => this.request("POST", "/v1/api-keys", req),
    revoke: (id: string): Promise<void> => this.request("DELETE", `/v1/api-keys/${segment(id)}`),
  };

  /** The agent registry: instances register and heartbeat; callers discover and route by capability. */
  readonly registry = {
    /** Register an instance (again with the same name and endpoint: refresh it, same id). */
    register: (registration: AgentRegistration): Promise<RegisteredAgent> => this.request("POST", "/v1/registry/agents", registration),
    /** The instance is alive; `active` is the work in progress, `degraded` asks for work only when nobody healthy can take it. */
    heartbeat: (id: string, beat: { active?: number; degraded?: boolean } = {}): Promise<RegisteredAgent> =>
      this.request("POST", `/v1/registry/agents/${segment(id)}/heartbeat`, beat),
    /** Registered instances (with `capability` when given) and their health. */
    discover: (capability?: string): Promise<RegisteredAgent[]> =>
      this.request("GET", capability ? `/v1/registry/agents?capability=${segment(capability)}` : "/v1/registry/agents"),
    /** The instance a request for `capability` should go to (a 503 DartmouthError when none is live). */
    route: (capability: string, strategy: "round_robin" | "least_loaded" = "round_robin"): Promise<RegisteredAgent> =>
      this.request("POST", "/v1/registry/route", { capability, strategy }),
    deregister: (id: string): Promise<void> => this.request("DELETE", `/v1/registry/agents/${segment(id)}`),
  };

  /**
   * Cross-agent memory: namespaced keys with TTLs and semantic facts, shared through grants. The
   * first write to a namespace creates it, owned by the writer; others need a grant (403 without).
   */
  readonly memory = {
    /** Store `value` (any JSON but null) under `key`, expiring after `ttlSeconds` when given. */
    put: <T extends Json>(namespace: string, key: string, value: T, opts: { ttlSeconds?: number } = {}): Promise<MemoryEntry<T>> =>
      this.request("PUT", this.memoryPath(namespace, `keys/${segment(key)}`), opts.ttlSeconds === undefined ? { value } : { value, ttl_seconds: opts.ttlSeconds }),
    /** The entry under `key` (a 404 DartmouthError once expired or deleted). */
    get: <T extends Json>(namespace: string, key: string): Promise<MemoryEntry<T>> => this.request("GET", this.memoryPath(namespace, `keys/${segment(key)}`)),
    delete: (namespace: string, key: string): Promise<void> => this.request("DELETE", this.memoryPath(namespace, `keys/${segment(key)}`)),
    /** One page of live keys in key order; pass `next_after` back as `after` for the next. */
    list: (namespace: string, opts: { prefix?: string; after?: string; limit?: number } = {}): Promise<MemoryKeyPage> =>
      this.request("GET", this.memoryPath(namespace, `keys${query(opts)}`)),
    /** Grant `principal` (`agent:<id>`, `user:<id>`, `key:<id>` or an agent id) read or write access (owner or admin). */
    grant: (namespace: string, principal: string, access: "read" | "write"): Promise<MemoryGrant> =>
      this.request("PUT", this.memoryPath(namespace, `grants/${segment(principal)}`), { access }),
    revoke: (namespace: string, principal: string): Promise<void> => this.request("DELETE", this.memoryPath(namespace, `grants/${segment(principal)}`)),
    /** Remember a fact (embedded by the sidecar's MiniLM). */
    addFact: (namespace: string, text: string, opts: { metadata?: JsonObject; ttlSeconds?: number } = {}): Promise<Fact> =>
      this.request("POST", this.memoryPath(namespace, "facts"), { text, metadata: opts.metadata ?? {}, ...(opts.ttlSeconds === undefined ? {} : { ttl_seconds: opts.ttlSeconds }) }),
    /** The facts closest in meaning to `query`, most similar first. */
    searchFacts: (namespace: string, queryText: string, opts: { k?: number; minScore?: number } = {}): Promise<ScoredFact[]> =>
      this.request("POST", this.memoryPath(namespace, "facts/search"), { query: queryText, k: opts.k ?? 5, min_score: opts.minScore ?? 0 }),
    deleteFact: (namespace: string, id: string): Promise<void> => this.request("DELETE", this.memoryPath(namespace, `facts/${segment(id)}`)),
  };

  /** Notifications: per-user preferences, templates, sending and history. */
  readonly notifications = {
    setPreferences: (userId: string, preferences: NotificationPreferences): Promise<{ user_id: string; preferences: NotificationPreferences; updated_at: number }> =>
      this.request("PUT", `/v1/notifications/preferences/${segment(userId)}`, preferences),
    preferences: (userId: string): Promise<{ user_id: string; preferences: NotificationPreferences; updated_at: number }> =>
      this.request("GET", `/v1/notifications/preferences/${segment(userId)}`),
    putTemplate: (name: string, template: { subject?: string; body: string }): Promise<NotificationTemplate> =>
      this.request("PUT", `/v1/notifications/templates/${segment(name)}`, template),
    templates: (): Promise<NotificationTemplate[]> => this.request("GET", "/v1/notifications/templates"),
    deleteTemplate: (name: string): Promise<void> => this.request("DELETE", `/v1/notifications/templates/${segment(name)}`),
    /** Send; an opted-out channel is a 409 and a failed provider a 502 DartmouthError (both recorded). */
    send: (request: SendNotification): Promise<Notification> => this.request("POST", "/v1/notifications", request),
    /** The user's recorded attempts, newest first. */
    history: (userId: string, limit = 100): Promise<Notification[]> =>
      this.request("GET", `/v1/notifications${query({ user_id: userId, limit })}`),
  };

  /** GDPR/CCPA: export and delete a user's data. */
  readonly privacy = {
    exportUser: (userId: string): Promise<JsonObject> => this.request("GET", `/v1/users/${segment(userId)}/export`),
    deleteUser: (userId: string): Promise<{ user_id: string; documents: number; files: number; api_keys: number }> =>
      this.request("DELETE", `/v1/users/${segment(userId)}`),
    /** Emails, phone and card numbers replaced by placeholders. */
    redact: async (text: string): Promise<string> => (await this.request<{ text: string }>("POST", "/v1/pii/redact", { text })).text,
  };

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.agentId = options.agentId;
    const f = options.fetch ?? globalThis.fetch;
    this.fetchImpl = (input, init) => f(input, init);
  }

  private adopt(pair: TokenPair, email?: string): Session {
    this.session = {
      user: { id: pair.user_id, role: pair.role, email },
      token: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresIn: pair.expires_in,
    };
    return this.session;
  }

  private requireAgent(): string {
    if (!this.agentId) throw new DartmouthError(0, "no_agent", "this client has no agentId", "");
    return this.agentId;
  }

  private dbPath(collection: string): string {
    return `/v1/agents/${segment(this.requireAgent())}/db/${segment(collection)}`;
  }

  private memoryPath(namespace: string, rest: string): string {
    return `/v1/memory/${segment(namespace)}/${rest}`;
  }

  private filePath(key: string): string {
    return `/v1/agents/${segment(this.requireAgent())}/files/${segment(key)}`;
  }

  private credential(): string | undefined {
    return this.session?.token ?? this.apiKey;
  }

  private async raw(method: string, path: string, json?: unknown, authenticated = true, upload?: { body: BodyInit; contentType: string }, retried = false): Promise<Response> {
    const headers: Record<string, string> = {};
    const credential = authenticated ? this.credential() : undefined;
    if (credential) headers.authorization = `Bearer ${credential}`;
    let body: BodyInit | undefined;
    if (upload) {
      headers["content-type"] = upload.contentType;
      body = upload.body;
    } else if (json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(json);
    }
    const response = await this.fetchImpl(this.baseUrl + path, { method, headers, body });
    if (response.ok) return response;
    if (response.status === 401 && authenticated && this.session && !retried) {
      try {
        await this.auth.refresh();
      } catch {
        this.session = undefined;
        throw await DartmouthClient.toError(response);
      }
      return this.raw(method, path, json, authenticated, upload, true);
    }
    throw await DartmouthClient.toError(response);
  }

  private static async toError(response: Response): Promise<DartmouthError> {
    const text = await response.text();
    try {
      const { error } = JSON.parse(text) as { error: { code: string; message: string; request_id: string } };
      return new DartmouthError(response.status, error.code, error.message, error.request_id);
    } catch {
      return new DartmouthError(response.status, "unknown", text || response.statusText, response.headers.get("x-request-id") ?? "");
    }
  }

  private async request<T>(method: string, path: string, json?: unknown, authenticated = true, upload?: { body: BodyInit; contentType: string }): Promise<T> {
    const response = await this.raw(method, path, json, authenticated, upload);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }
}
