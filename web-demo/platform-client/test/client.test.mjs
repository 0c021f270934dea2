// Unit tests with a recording fake fetch, plus a live run against a sidecar when PLATFORM_URL is
// set (e.g. `cargo run --release -p dartmouth-platform --example serve` prints one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DartmouthClient, DartmouthError } from "../dist/index.js";

function fakeFetch(responses) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, method: init.method, headers: init.headers, body: init.body });
    const next = responses.shift();
    if (!next) throw new Error(`unexpected request ${init.method} ${url}`);
    const body = next.body === undefined ? null : JSON.stringify(next.body);
    return new Response(body, { status: next.status ?? 200, headers: { "content-type": "application/json", "x-request-id": "rid" } });
  };
  return { fn, calls };
}

const pair = (access, refresh) => ({ access_token: access, refresh_token: refresh, expires_in: 3600, user_id: "u1", role: "user", token_type: "Bearer" });

test("auth.login returns { user, token } and later calls carry the token", async () => {
  const { fn, calls } = fakeFetch([{ body: pair("A1", "R1") }, { body: { kind: "user", id: "u1", role: "user", agent_id: null, scopes: [] } }]);
  const client = new DartmouthClient({ baseUrl: "http://sidecar/", agentId: "pa", fetch: fn });
  const { user, token } = await client.auth.login({ email: "u@example.com", password: "pw-123456" });
  assert.deepEqual(user, { id: "u1", role: "user", email: "u@example.com" });
  assert.equal(token, "A1");
  assert.equal(calls[0].url, "http://sidecar/v1/auth/login");
  assert.equal(calls[0].headers.authorization, undefined);
  await client.auth.me();
  assert.equal(calls[1].headers.authorization, "Bearer A1");
});

test("db.insert posts the document to the agent's collection with the API key", async () => {
  const { fn, calls } = fakeFetch([{ status: 201, body: { id: "d1", agent_id: "pa", collection: "tasks", data: { title: "x" }, created_at: 1, updated_at: 1 } }]);
  const client = new DartmouthClient({ apiKey: "dk_k_s", agentId: "mccarthy pa", fetch: fn });
  const doc = await client.db.insert("tasks", { title: "x" }, { encrypt: ["ssn"] });
  assert.equal(doc.id, "d1");
  assert.equal(calls[0].url, "/v1/agents/mccarthy%20pa/db/tasks?encrypt=ssn");
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers.authorization, "Bearer dk_k_s");
  assert.deepEqual(JSON.parse(calls[0].body), { title: "x" });
});

test("errors surface code, message, status and request id", async () => {
  const { fn } = fakeFetch([{ status: 403, body: { error: { code: "forbidden", message: "no", request_id: "r-9" } } }]);
  const client = new DartmouthClient({ apiKey: "dk_k_s", agentId: "pa", fetch: fn });
  await assert.rejects(client.db.query("tasks", { done: true }), (e) => e instanceof DartmouthError && e.status === 403 && e.code === "forbidden" && e.requestId === "r-9");
});

test("a 401 refreshes once and retries with the new token", async () => {
  const { fn, calls } = fakeFetch([
    { body: pair("A1", "R1") },
    { status: 401, body: { error: { code: "unauthenticated", message: "expired", request_id: "r" } } },
    { body: pair("A2", "R2") },
    { body: { documents: [] } },
  ]);
  const client = new DartmouthClient({ agentId: "pa", fetch: fn });
  await client.auth.login({ email: "u@example.com", password: "pw-123456" });
  assert.deepEqual(await client.db.query("tasks"), []);
  assert.equal(calls[2].url, "/v1/auth/refresh");
  assert.deepEqual(JSON.parse(calls[2].body), { refresh_token: "R1" });
  assert.equal(calls[3].headers.authorization, "Bearer A2");
});

test("registry.route asks for a capability and surfaces 'nobody live' as a 503", async () => {
  const agent = { id: "i1", name: "orders", capabilities: ["orders"], endpoint: "http://a", version: "", heartbeat_interval_ms: 1000, capacity: 4, active: 1, health: "healthy", registered_at: 1, last_heartbeat: 1 };
  const { fn, calls } = fakeFetch([
    { body: agent },
    { status: 503, body: { error: { code: "unavailable", message: "no live agent instance with capability billing", request_id: "r" } } },
  ]);
  const client = new DartmouthClient({ apiKey: "dk_k_s", fetch: fn });
  assert.equal((await client.registry.route("orders", "least_loaded")).id, "i1");
  assert.equal(calls[0].url, "/v1/registry/route");
  assert.deepEqual(JSON.parse(calls[0].body), { capability: "orders", strategy: "least_loaded" });
  await assert.rejects(client.registry.route("billing"), (e) => e.status === 503 && /billing/.test(e.message));
});

test("memory: put with a TTL, read, grant and search address the namespace's routes", async () => {
  const entry = { namespace: "orders mem", key: "cart:42", value: { items: 3 }, expires_at: 5, created_at: 1, updated_at: 1, updated_by: "agent:planner" };
  const { fn, calls } = fakeFetch([
    { body: entry },
    { body: entry },
    { body: { keys: [], next_after: null } },
    { body: { principal: "agent:support", access: "read", granted_by: "agent:planner", created_at: 1 } },
    { status: 201, body: { id: "f1", namespace: "orders mem", text: "ships Tuesdays", metadata: { n: 1 }, expires_at: null, created_at: 1, created_by: "agent:planner" } },
    { body: [{ score: 0.8, fact: { id: "f1" } }] },
    { status: 403, body: { error: { code: "forbidden", message: "no read grant on memory namespace x", request_id: "r" } } },
  ]);
  const client = new DartmouthClient({ apiKey: "dk_k_s", fetch: fn });
  assert.deepEqual((await client.memory.put("orders mem", "cart:42", { items: 3 }, { ttlSeconds: 60 })).value, { items: 3 });
  assert.equal(calls[0].method, "PUT");
  assert.equal(calls[0].url, "/v1/memory/orders%20mem/keys/cart%3A42");
  assert.deepEqual(JSON.parse(calls[0].body), { value: { items: 3 }, ttl_seconds: 60 });
  await client.memory.get("orders mem", "cart:42");
  assert.equal(calls[1].method, "GET");
  await client.memory.list("orders mem", { prefix: "cart:", limit: 10 });
  assert.equal(calls[2].url, "/v1/memory/orders%20mem/keys?prefix=cart%3A&limit=10");
  assert.equal((await client.memory.grant("orders mem", "support", "read")).access, "read");
  assert.equal(calls[3].url, "/v1/memory/orders%20mem/grants/support");
  assert.deepEqual(JSON.parse(calls[3].body), { access: "read" });
  await client.memory.addFact("orders mem", "ships Tuesdays", { metadata: { n: 1 } });
  assert.deepEqual(JSON.parse(calls[4].body), { text: "ships Tuesdays", metadata: { n: 1 } });
  const found = await client.memory.searchFacts("orders mem", "when does it leave", { k: 3 });
  assert.equal(found[0].fact.id, "f1");
  assert.equal(calls[5].url, "/v1/memory/orders%20mem/facts/search");
  assert.deepEqual(JSON.parse(calls[5].body), { query: "when does it leave", k: 3, min_score: 0 });
  await assert.rejects(client.memory.get("x", "k"), (e) => e.status === 403 && e.code === "forbidden");
});

test("notifications: preferences, send and history; an opt-out is a 409", async () => {
  const sent = { id: "n1", user_id: "u1", channel: "email", status: "sent", detail: "250 ok", at: 1 };
  const { fn, calls } = fakeFetch([
    { body: { user_id: "u1", preferences: { channels: ["email"], email: "ann@example.com" }, updated_at: 1 } },
    { status: 201, body: sent },
    { status: 409, body: { error: { code: "conflict", message: "refused: opted out", request_id: "r" } } },
    { body: [sent] },
  ]);
  const client = new DartmouthClient({ apiKey: "dk_k_s", fetch: fn });
  await client.notifications.setPreferences("u1", { channels: ["email"], email: "ann@example.com" });
  assert.equal(calls[0].method, "PUT");
  assert.equal(calls[0].url, "/v1/notifications/preferences/u1");
  assert.equal((await client.notifications.send({ user_id: "u1", channel: "email", template: "welcome", variables: { name: "Ann" } })).status, "sent");
  assert.deepEqual(JSON.parse(calls[1].body), { user_id: "u1", channel: "email", template: "welcome", variables: { name: "Ann" } });
  await assert.rejects(client.notifications.send({ user_id: "u1", channel: "sms", body: "hi" }), (e) => e.status === 409 && /opted out/.test(e.message));
  assert.equal((await client.notifications.history("u1", 5))[0].id, "n1");
  assert.equal(calls[3].url, "/v1/notifications?user_id=u1&limit=5");
});

const live = process.env.PLATFORM_URL;
test("live: login, key, insert, query, upload, signed URL", { skip: live ? false : "PLATFORM_URL not set" }, async () => {
  const admin = new DartmouthClient({ baseUrl: live });
  await admin.auth.login({ email: process.env.PLATFORM_ADMIN_EMAIL ?? "admin@example.com", password: process.env.PLATFORM_ADMIN_PASSWORD ?? "admin-password" });
  const agentId = `ts-${Date.now()}`;
  const { key } = await admin.apiKeys.create({ name: "ts test", agent_id: agentId });
  const dartmouth = new DartmouthClient({ baseUrl: live, apiKey: key, agentId });
  const doc = await dartmouth.db.insert("tasks", { title: "Follow up with client", dueDate: Date.now() + 86400000 });
  assert.equal(doc.data.title, "Follow up with client");
  const found = await dartmouth.db.query("tasks", { title: "Follow up with client" });
  assert.equal(found.length, 1);
  await dartmouth.storage.upload("notes/hi.txt", "hello", "text/plain");
  const signed = await dartmouth.storage.signedUrl("notes/hi.txt", 60);
  assert.equal(await (await fetch(signed.url)).text(), "hello");
  await assert.rejects(dartmouth.db.query("tasks", { "bad field": 1 }), (e) => e.status === 400 && e.code === "bad_request");
  const instance = await dartmouth.registry.register({ name: agentId, capabilities: [agentId], endpoint: "http://127.0.0.1:1/agent", heartbeat_interval_ms: 60000 });
  assert.equal(instance.health, "healthy");
  assert.equal((await dartmouth.registry.heartbeat(instance.id, { active: 1 })).active, 1);
  assert.equal((await dartmouth.registry.route(agentId)).id, instance.id);
  assert.deepEqual((await dartmouth.registry.discover(agentId)).map((a) => a.id), [instance.id]);
  await dartmouth.registry.deregister(instance.id);
  await assert.rejects(dartmouth.registry.route(agentId), (e) => e.status === 503);
});
