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
export type Json = null | boolean | number | string | Json[] | {
    [key: string]: Json;
};
export type JsonObject = {
    [key: string]: Json;
};
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
export interface User {
    id: string;
    email?: string;
    role: Role;
}
export interface Session {
    user: User;
    token: string;
    refreshToken: string;
    expiresIn: number;
}
export interface WhoAmI {
    kind: "user" | "api_key";
    id: string;
    role: Role;
    agent_id: string | null;
    scopes: string[];
}
export interface Document<T extends JsonObject = JsonObject> {
    id: string;
    agent_id: string;
    collection: string;
    data: T;
    created_at: number;
    updated_at: number;
}
export interface QueryOptions {
    limit?: number;
    offset?: number;
}
export interface FileInfo {
    agent_id: string;
    key: string;
    content_type: string;
    size: number;
    sha256: string;
    owner_user_id: string | null;
    created_at: number;
}
export type Health = "healthy" | "degraded" | "down";
export interface RegisteredAgent {
    id: string;
    name: string;
    capabilities: string[];
    endpoint: string;
    version: string;
    heartbeat_interval_ms: number;
    capacity: number;
    active: number;
    health: Health;
    registered_at: number;
    last_heartbeat: number;
}
export interface AgentRegistration {
    name: string;
    capabilities: string[];
    endpoint: string;
    version?: string;
    heartbeat_interval_ms?: number;
    capacity?: number;
}
export interface MemoryEntry<T extends Json = Json> {
    namespace: string;
    key: string;
    value: T;
    expires_at: number | null;
    created_at: number;
    updated_at: number;
    updated_by: string;
}
export interface MemoryKeyPage {
    keys: {
        key: string;
        size: number;
        expires_at: number | null;
        updated_at: number;
    }[];
    next_after: string | null;
}
export interface MemoryGrant {
    principal: string;
    access: "read" | "write";
    granted_by: string;
    created_at: number;
}
export interface Fact {
    id: string;
    namespace: string;
    text: string;
    metadata: JsonObject;
    expires_at: number | null;
    created_at: number;
    created_by: string;
}
export interface ScoredFact {
    score: number;
    fact: Fact;
}
export type Channel = "email" | "sms" | "push";
export interface NotificationPreferences {
    channels: Channel[];
    email?: string | null;
    phone?: string | null;
    push_token?: string | null;
}
export interface NotificationTemplate {
    name: string;
    subject: string;
    body: string;
    variables: string[];
    updated_at: number;
}
export interface SendNotification {
    user_id: string;
    channel: Channel;
    template?: string;
    subject?: string;
    body?: string;
    variables?: {
        [name: string]: string;
    };
}
/** One recorded attempt: `sent`, `failed` (the provider failed) or `refused` (opted out). */
export interface Notification {
    id: string;
    user_id: string;
    channel: Channel;
    status: string;
    detail: string;
    at: number;
}
export interface ApiKeyCreated {
    key: string;
    info: {
        id: string;
        name: string;
        role: Role;
        agent_id: string | null;
        scopes: string[];
    };
}
/** Every failure: the sidecar's `{"error": {"code", "message", "request_id"}}` plus the status. */
export declare class DartmouthError extends Error {
    readonly status: number;
    readonly code: string;
    readonly requestId: string;
    constructor(status: number, code: string, message: string, requestId: string);
}
export declare class DartmouthClient {
    readonly baseUrl: string;
    readonly agentId?: string;
    private readonly apiKey?;
    private readonly fetchImpl;
    private session?;
    /** Authentication: login, register, refresh, logout, me, room tokens. */
    readonly auth: {
        /** Log in; later calls carry the access token. */
        login: (credentials: {
            email: string;
            password: string;
        }) => Promise<Session>;
        /** Open registration of a `user` account. */
        register: (credentials: {
            email: string;
            password: string;
        }) => Promise<User>;
        /** Rotate the refresh token (done automatically once on a 401). */
        refresh: () => Promise<Session>;
        /** End the session on the server and forget it here. */
        logout: () => Promise<void>;
        /** Who the current credential is. */
        me: () => Promise<WhoAmI>;
        /** A gateway room token for the logged-in user. */
        roomToken: (room: string, canPublish?: boolean) => Promise<{
            token: string;
            expires_at: number;
        }>;
        /** The current session, if logged in. */
        session: () => Session | undefined;
    };
    /** The agent's documents: `db.insert('tasks', {...})` and friends. */
    readonly db: {
        insert: <T extends JsonObject>(collection: string, doc: T, opts?: {
            encrypt?: string[];
        }) => Promise<Document<T>>;
        get: <T extends JsonObject>(collection: string, id: string) => Promise<Document<T>>;
        query: <T extends JsonObject>(collection: string, filter?: {
            [field: string]: string | number | boolean | null;
        }, opts?: QueryOptions) => Promise<Document<T>[]>;
        update: <T extends JsonObject>(collection: string, id: string, patch: JsonObject) => Promise<Document<T>>;
        delete: (collection: string, id: string) => Promise<void>;
        /** Let another agent read or write one of this agent's collections (`*` for all). */
        grant: (granteeAgent: string, collection: string, access: "read" | "write") => Promise<void>;
    };
    /** The agent's files. */
    readonly storage: {
        upload: (key: string, body: Blob | ArrayBuffer | Uint8Array | string, contentType: string, opts?: {
            userId?: string;
        }) => Promise<FileInfo>;
        download: (key: string) => Promise<Blob>;
        list: () => Promise<FileInfo[]>;
        delete: (key: string) => Promise<void>;
        /** An absolute, time-limited URL that needs no credential. */
        signedUrl: (key: string, expiresIn?: number) => Promise<{
            url: string;
            expires_at: number;
        }>;
    };
    /** API keys for agents and services. */
    readonly apiKeys: {
        create: (req: {
            name: string;
            agent_id?: string;
            role?: Role;
            scopes?: string[];
        }) => Promise<ApiKeyCreated>;
        revoke: (id: string) => Promise<void>;
    };
    /** The agent registry: instances register and heartbeat; callers discover and route by capability. */
    readonly registry: {
        /** Register an instance (again with the same name and endpoint: refresh it, same id). */
        register: (registration: AgentRegistration) => Promise<RegisteredAgent>;
        /** The instance is alive; `active` is the work in progress, `degraded` asks for work only when nobody healthy can take it. */
        heartbeat: (id: string, beat?: {
            active?: number;
            degraded?: boolean;
        }) => Promise<RegisteredAgent>;
        /** Registered instances (with `capability` when given) and their health. */
        discover: (capability?: string) => Promise<RegisteredAgent[]>;
        /** The instance a request for `capability` should go to (a 503 DartmouthError when none is live). */
        route: (capability: string, strategy?: "round_robin" | "least_loaded") => Promise<RegisteredAgent>;
        deregister: (id: string) => Promise<void>;
    };
    /**
     * Cross-agent memory: namespaced keys with TTLs and semantic facts, shared through grants. The
     * first write to a namespace creates it, owned by the writer; others need a grant (403 without).
     */
    readonly memory: {
        /** Store `value` (any JSON but null) under `key`, expiring after `ttlSeconds` when given. */
        put: <T extends Json>(namespace: string, key: string, value: T, opts?: {
            ttlSeconds?: number;
        }) => Promise<MemoryEntry<T>>;
        /** The entry under `key` (a 404 DartmouthError once expired or deleted). */
        get: <T extends Json>(namespace: string, key: string) => Promise<MemoryEntry<T>>;
        delete: (namespace: string, key: string) => Promise<void>;
        /** One page of live keys in key order; pass `next_after` back as `after` for the next. */
        list: (namespace: string, opts?: {
            prefix?: string;
            after?: string;
            limit?: number;
        }) => Promise<MemoryKeyPage>;
        /** Grant `principal` (`agent:<id>`, `user:<id>`, `key:<id>` or an agent id) read or write access (owner or admin). */
        grant: (namespace: string, principal: string, access: "read" | "write") => Promise<MemoryGrant>;
        revoke: (namespace: string, principal: string) => Promise<void>;
        /** Remember a fact (embedded by the sidecar's MiniLM). */
        addFact: (namespace: string, text: string, opts?: {
            metadata?: JsonObject;
            ttlSeconds?: number;
        }) => Promise<Fact>;
        /** The facts closest in meaning to `query`, most similar first. */
        searchFacts: (namespace: string, queryText: string, opts?: {
            k?: number;
            minScore?: number;
        }) => Promise<ScoredFact[]>;
        deleteFact: (namespace: string, id: string) => Promise<void>;
    };
    /** Notifications: per-user preferences, templates, sending and history. */
    readonly notifications: {
        setPreferences: (userId: string, preferences: NotificationPreferences) => Promise<{
            user_id: string;
            preferences: NotificationPreferences;
            updated_at: number;
        }>;
        preferences: (userId: string) => Promise<{
            user_id: string;
            preferences: NotificationPreferences;
            updated_at: number;
        }>;
        putTemplate: (name: string, template: {
            subject?: string;
            body: string;
        }) => Promise<NotificationTemplate>;
        templates: () => Promise<NotificationTemplate[]>;
        deleteTemplate: (name: string) => Promise<void>;
        /** Send; an opted-out channel is a 409 and a failed provider a 502 DartmouthError (both recorded). */
        send: (request: SendNotification) => Promise<Notification>;
        /** The user's recorded attempts, newest first. */
        history: (userId: string, limit?: number) => Promise<Notification[]>;
    };
    /** GDPR/CCPA: export and delete a user's data. */
    readonly privacy: {
        exportUser: (userId: string) => Promise<JsonObject>;
        deleteUser: (userId: string) => Promise<{
            user_id: string;
            documents: number;
            files: number;
            api_keys: number;
        }>;
        /** Emails, phone and card numbers replaced by placeholders. */
        redact: (text: string) => Promise<string>;
    };
    constructor(options?: ClientOptions);
    private adopt;
    private requireAgent;
    private dbPath;
    private memoryPath;
    private filePath;
    private credential;
    private raw;
    private static toError;
    private request;
}
