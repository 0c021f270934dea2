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
/** Every failure: the sidecar's `{"error": {"code", "message", "request_id"}}` plus the status. */
export class DartmouthError extends Error {
    status;
    code;
    requestId;
    constructor(status, code, message, requestId) {
        super(message);
        this.status = status;
        this.code = code;
        this.requestId = requestId;
        this.name = "DartmouthError";
    }
}
const segment = (s) => encodeURIComponent(s);
/** `?a=1&b=x` of the defined values (empty when none). */
const query = (params) => {
    const pairs = Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${segment(String(v))}`);
    return pairs.length ? `?${pairs.join("&")}` : "";
};
export class DartmouthClient {
    baseUrl;
    agentId;
    apiKey;
    fetchImpl;
    session;
    /** Authentication: login, register, refresh, logout, me, room tokens. */
    auth = {
        /** Log in; later calls carry the access token. */
        login: async (credentials) => {
            const pair = await this.request("POST", "/v1/auth/login", credentials, false);
            return this.adopt(pair, credentials.email);
        },
        /** Open registration of a `user` account. */
        register: (credentials) => this.request("POST", "/v1/auth/register", credentials, false),
        /** Rotate the refresh token (done automatically once on a 401). */
        refresh: async () => {
            if (!this.session)
                throw new DartmouthError(401, "unauthenticated", "not logged in", "");
            const pair = await this.request("POST", "/v1/auth/refresh", { refresh_token: this.session.refreshToken }, false);
            return this.adopt(pair, this.session.user.email);
        },
        /** End the session on the server and forget it here. */
        logout: async () => {
            try {
                await this.request("POST", "/v1/auth/logout");
            }
            finally {
                this.session = undefined;
            }
        },
        /** Who the current credential is. */
        me: () => this.request("GET", "/v1/auth/me"),
        /** A gateway room token for the logged-in user. */
        roomToken: (room, canPublish = true) => this.request("POST", "/v1/room-tokens", { room, can_publish: canPublish }),
        /** The current session, if logged in. */
        session: () => this.session,
    };
    /** The agent's documents: `db.insert('tasks', {...})` and friends. */
    db = {
        insert: (collection, doc, opts = {}) => {
            const query = opts.encrypt?.length ? `?encrypt=${segment(opts.encrypt.join(","))}` : "";
            return this.request("POST", `${this.dbPath(collection)}${query}`, doc);
        },
        get: (collection, id) => this.request("GET", `${this.dbPath(collection)}/${segment(id)}`),
        query: async (collection, filter = {}, opts = {}) => {
            const result = await this.request("POST", `${this.dbPath(collection)}/query`, { filter, ...opts });
            return result.documents;
        },
        update: (collection, id, patch) => this.request("PATCH", `${this.dbPath(collection)}/${segment(id)}`, patch),
        delete: (collection, id) => this.request("DELETE", `${this.dbPath(collection)}/${segment(id)}`),
        /** Let another agent read or write one of this agent's collections (`*` for all). */
        grant: (granteeAgent, collection, access) => this.request("PUT", `/v1/agents/${segment(this.requireAgent())}/grants`, { grantee_agent: granteeAgent, collection, access }),
    };
    /** The agent's files. */
    storage = {
        upload: (key, body, contentType, opts = {}) => {
            const query = opts.userId ? `?user_id=${segment(opts.userId)}` : "";
            return this.request("PUT", `${this.filePath(key)}${query}`, undefined, true, { body: body, contentType });
        },
        download: async (key) => {
            const response = await this.raw("GET", this.filePath(key));
            return response.blob();
        },
        list: () => this.request("GET", `/v1/agents/${segment(this.requireAgent())}/files`),
        delete: (key) => this.request("DELETE", this.filePath(key)),
        /** An absolute, time-limited URL that needs no credential. */
        signedUrl: async (key, expiresIn) => {
            const signed = await this.request("POST", `${this.filePath(key)}/signed-url`, expiresIn ? { expires_in: expiresIn } : {});
            return { ...signed, url: this.baseUrl + signed.url };
        },
    };
    /** API keys for agents and services. */
    apiKeys = {
        create: (req) => this.request("POST", "/v1/api-keys", req),
        revoke: (id) => this.request("DELETE", `/v1/api-keys/${segment(id)}`),
    };
    /** The agent registry: instances register and heartbeat; callers discover and route by capability. */
    registry = {
        /** Register an instance (again with the same name and endpoint: refresh it, same id). */
        register: (registration) => this.request("POST", "/v1/registry/agents", registration),
        /** The instance is alive; `active` is the work in progress, `degraded` asks for work only when nobody healthy can take it. */
        heartbeat: (id, beat = {}) => this.request("POST", `/v1/registry/agents/${segment(id)}/heartbeat`, beat),
        /** Registered instances (with `capability` when given) and their health. */
        discover: (capability) => this.request("GET", capability ? `/v1/registry/agents?capability=${segment(capability)}` : "/v1/registry/agents"),
        /** The instance a request for `capability` should go to (a 503 DartmouthError when none is live). */
        route: (capability, strategy = "round_robin") => this.request("POST", "/v1/registry/route", { capability, strategy }),
        deregister: (id) => this.request("DELETE", `/v1/registry/agents/${segment(id)}`),
    };
    /**
     * Cross-agent memory: namespaced keys with TTLs and semantic facts, shared through grants. The
     * first write to a namespace creates it, owned by the writer; others need a grant (403 without).
     */
    memory = {
        /** Store `value` (any JSON but null) under `key`, expiring after `ttlSeconds` when given. */
        put: (namespace, key, value, opts = {}) => this.request("PUT", this.memoryPath(namespace, `keys/${segment(key)}`), opts.ttlSeconds === undefined ? { value } : { value, ttl_seconds: opts.ttlSeconds }),
        /** The entry under `key` (a 404 DartmouthError once expired or deleted). */
        get: (namespace, key) => this.request("GET", this.memoryPath(namespace, `keys/${segment(key)}`)),
        delete: (namespace, key) => this.request("DELETE", this.memoryPath(namespace, `keys/${segment(key)}`)),
        /** One page of live keys in key order; pass `next_after` back as `after` for the next. */
        list: (namespace, opts = {}) => this.request("GET", this.memoryPath(namespace, `keys${query(opts)}`)),
        /** Grant `principal` (`agent:<id>`, `user:<id>`, `key:<id>` or an agent id) read or write access (owner or admin). */
        grant: (namespace, principal, access) => this.request("PUT", this.memoryPath(namespace, `grants/${segment(principal)}`), { access }),
        revoke: (namespace, principal) => this.request("DELETE", this.memoryPath(namespace, `grants/${segment(principal)}`)),
        /** Remember a fact (embedded by the sidecar's MiniLM). */
        addFact: (namespace, text, opts = {}) => this.request("POST", this.memoryPath(namespace, "facts"), { text, metadata: opts.metadata ?? {}, ...(opts.ttlSeconds === undefined ? {} : { ttl_seconds: opts.ttlSeconds }) }),
        /** The facts closest in meaning to `query`, most similar first. */
        searchFacts: (namespace, queryText, opts = {}) => this.request("POST", this.memoryPath(namespace, "facts/search"), { query: queryText, k: opts.k ?? 5, min_score: opts.minScore ?? 0 }),
        deleteFact: (namespace, id) => this.request("DELETE", this.memoryPath(namespace, `facts/${segment(id)}`)),
    };
    /** Notifications: per-user preferences, templates, sending and history. */
    notifications = {
        setPreferences: (userId, preferences) => this.request("PUT", `/v1/notifications/preferences/${segment(userId)}`, preferences),
        preferences: (userId) => this.request("GET", `/v1/notifications/preferences/${segment(userId)}`),
        putTemplate: (name, template) => this.request("PUT", `/v1/notifications/templates/${segment(name)}`, template),
        templates: () => this.request("GET", "/v1/notifications/templates"),
        deleteTemplate: (name) => this.request("DELETE", `/v1/notifications/templates/${segment(name)}`),
        /** Send; an opted-out channel is a 409 and a failed provider a 502 DartmouthError (both recorded). */
        send: (request) => this.request("POST", "/v1/notifications", request),
        /** The user's recorded attempts, newest first. */
        history: (userId, limit = 100) => this.request("GET", `/v1/notifications${query({ user_id: userId, limit })}`),
    };
    /** GDPR/CCPA: export and delete a user's data. */
    privacy = {
        exportUser: (userId) => this.request("GET", `/v1/users/${segment(userId)}/export`),
        deleteUser: (userId) => this.request("DELETE", `/v1/users/${segment(userId)}`),
        /** Emails, phone and card numbers replaced by placeholders. */
        redact: async (text) => (await this.request("POST", "/v1/pii/redact", { text })).text,
    };
    constructor(options = {}) {
        this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
        this.apiKey = options.apiKey;
        this.agentId = options.agentId;
        const f = options.fetch ?? globalThis.fetch;
        this.fetchImpl = (input, init) => f(input, init);
    }
    adopt(pair, email) {
        this.session = {
            user: { id: pair.user_id, role: pair.role, email },
            token: pair.access_token,
            refreshToken: pair.refresh_token,
            expiresIn: pair.expires_in,
        };
        return this.session;
    }
    requireAgent() {
        if (!this.agentId)
            throw new DartmouthError(0, "no_agent", "this client has no agentId", "");
        return this.agentId;
    }
    dbPath(collection) {
        return `/v1/agents/${segment(this.requireAgent())}/db/${segment(collection)}`;
    }
    memoryPath(namespace, rest) {
        return `/v1/memory/${segment(namespace)}/${rest}`;
    }
    filePath(key) {
        return `/v1/agents/${segment(this.requireAgent())}/files/${segment(key)}`;
    }
    credential() {
        return this.session?.token ?? this.apiKey;
    }
    async raw(method, path, json, authenticated = true, upload, retried = false) {
        const headers = {};
        const credential = authenticated ? this.credential() : undefined;
        if (credential)
            headers.authorization = `Bearer ${credential}`;
        let body;
        if (upload) {
            headers["content-type"] = upload.contentType;
            body = upload.body;
        }
        else if (json !== undefined) {
            headers["content-type"] = "application/json";
            body = JSON.stringify(json);
        }
        const response = await this.fetchImpl(this.baseUrl + path, { method, headers, body });
        if (response.ok)
            return response;
        if (response.status === 401 && authenticated && this.session && !retried) {
            try {
                await this.auth.refresh();
            }
            catch {
                this.session = undefined;
                throw await DartmouthClient.toError(response);
            }
            return this.raw(method, path, json, authenticated, upload, true);
        }
        throw await DartmouthClient.toError(response);
    }
    static async toError(response) {
        const text = await response.text();
        try {
            const { error } = JSON.parse(text);
            return new DartmouthError(response.status, error.code, error.message, error.request_id);
        }
        catch {
            return new DartmouthError(response.status, "unknown", text || response.statusText, response.headers.get("x-request-id") ?? "");
        }
    }
    async request(method, path, json, authenticated = true, upload) {
        const response = await this.raw(method, path, json, authenticated, upload);
        if (response.status === 204)
            return undefined;
        return (await response.json());
    }
}
