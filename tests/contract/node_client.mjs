// Calls a running server the way a Node.js team would: @grpc/grpc-js stubs loaded at run time
// from the .proto files of protos/ as they are, and error details decoded from the
// grpc-status-details-bin trailer. tests/contract/test_node_client.py runs it against a real
// server; by hand:
//
//   TOPMAIL_GRPC_TARGET=127.0.0.1:50051 TOPMAIL_API_KEY=tm_test_... \
//   TOPMAIL_PROTO_INCLUDE_DIRS=protos:.venv/lib/python3.11/site-packages \
//   node tests/contract/node_client.mjs
//
// TOPMAIL_PROTO_INCLUDE_DIRS lists, separated like PATH, the folders that hold our protos and the
// googleapis protos (google/api, google/rpc, google/type).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const ERROR_DOMAIN = "topmail.tracking.v1";
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CALL_TIMEOUT_MS = 10_000;

function requiredEnvironment(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`the environment variable ${name} is missing; see the comment at the top of this file`);
  }
  return value;
}

const target = requiredEnvironment("TOPMAIL_GRPC_TARGET");
const apiKey = requiredEnvironment("TOPMAIL_API_KEY");
const includeDirs = requiredEnvironment("TOPMAIL_PROTO_INCLUDE_DIRS").split(path.delimiter);

// keepCase keeps the proto field names (product_id), as in the proto JSON mapping's original names.
const packageDefinition = protoLoader.loadSync(
  ["topmail/tracking/v1/contact_service.proto", "topmail/tracking/v1/tracking_service.proto"],
  { includeDirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(packageDefinition).topmail.tracking.v1;
const contacts = new api.ContactService(target, grpc.credentials.createInsecure());
const tracking = new api.TrackingService(target, grpc.credentials.createInsecure());

// google.rpc.Status and the detail messages, for decoding grpc-status-details-bin.
const statusTypes = new protobuf.Root();
statusTypes.resolvePath = (_origin, importPath) => {
  const found = includeDirs.map((dir) => path.join(dir, importPath)).find((candidate) => existsSync(candidate));
  return found ?? importPath;
};
statusTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = statusTypes.lookupType("google.rpc.Status");

function callOptions() {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);
  return [metadata, { deadline: new Date(Date.now() + CALL_TIMEOUT_MS) }];
}

// Turns a grpc-js unary call, started by `start` with a callback, into a promise.
function unary(start) {
  return new Promise((resolve, reject) => {
    start((error, response) => (error ? reject(error) : resolve(response)));
  });
}

async function expectRpcError(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("the call succeeded, but an error was expected");
}

// Decodes the google.protobuf.Any details of a google.rpc.Status, keyed by message name.
function decodeDetails(anyDetails) {
  const details = {};
  for (const detail of anyDetails) {
    const messageName = detail.type_url.slice(detail.type_url.lastIndexOf("/") + 1);
    details[messageName] = statusTypes.lookupType(messageName).decode(detail.value);
  }
  return details;
}

// Decodes the google.rpc.Status of a failed call, with its details keyed by message name.
function richStatus(error) {
  const [encoded] = error.metadata.get("grpc-status-details-bin");
  assert.ok(encoded, "the error has no grpc-status-details-bin trailer");
  const status = Status.decode(encoded);
  return { status, details: decodeDetails(status.details) };
}

function createContact(email) {
  return unary((callback) => contacts.CreateContact({ email }, ...callOptions(), callback));
}

function trackProductView(request) {
  return unary((callback) => tracking.TrackProductView(request, ...callOptions(), callback));
}

function recordEmailEvent(request) {
  return unary((callback) => tracking.RecordEmailEvent(request, ...callOptions(), callback));
}

function recordEmailEvents(requests) {
  return unary((callback) => tracking.RecordEmailEvents({ requests }, ...callOptions(), callback));
}

const email = `node-client-${randomUUID()}@example.com`;
let created;

before(async () => {
  created = await createContact(email);
});

after(() => {
  contacts.close();
  tracking.close();
});

test("CreateContact returns stored contact", () => {
  assert.match(created.contact.id, UUID_PATTERN);
  assert.equal(created.contact.email, email);
  assert.ok(Number(created.contact.create_time.seconds) > 0, "create_time is not set");
});

test("taken address is ALREADY_EXISTS", async () => {
  const error = await expectRpcError(createContact(email));

  assert.equal(error.code, grpc.status.ALREADY_EXISTS);
  const { details } = richStatus(error);
  const info = details["google.rpc.ErrorInfo"];
  assert.ok(info, "the status has no google.rpc.ErrorInfo");
  assert.equal(info.reason, "CONTACT_ALREADY_EXISTS");
  assert.equal(info.domain, ERROR_DOMAIN);
  assert.equal(info.metadata.contact_id, created.contact.id);
});

test("TrackProductView stores exact price", async () => {
  const response = await trackProductView({
    email,
    product_id: "prod_abc123",
    product_name: "Premium Wireless Headphones",
    product_url: "https://shop.example.com/products/wireless-headphones",
    price: { currency_code: "usd", units: 99, nanos: 990_000_000 },
    idempotency_key: `node-${randomUUID()}`,
  });

  const view = response.product_view;
  assert.match(view.id, UUID_PATTERN);
  assert.equal(view.contact_id, created.contact.id);
  assert.equal(view.product_id, "prod_abc123");
  assert.equal(view.price.currency_code, "USD");
  assert.equal(view.price.units, "99");
  assert.equal(view.price.nanos, 990_000_000);
  assert.ok(Number(view.viewed_at.seconds) > 0, "viewed_at is not set");
});

test("RecordEmailEvent stores human delivery", async () => {
  const response = await recordEmailEvent({
    contact_id: created.contact.id,
    message_id: "node-message-1",
    campaign_id: "node-campaign",
    event_type: "EMAIL_EVENT_TYPE_DELIVERED",
  });

  const event = response.email_event;
  assert.match(event.id, UUID_PATTERN);
  assert.equal(event.contact_id, created.contact.id);
  assert.equal(event.message_id, "node-message-1");
  assert.equal(event.event_type, "EMAIL_EVENT_TYPE_DELIVERED");
  assert.equal(event.is_bot, false);
  assert.equal(event.bot_type, "BOT_TYPE_UNSPECIFIED");
  assert.notEqual(event.classifier_version, "");
});

test("open without user agent is bot", async () => {
  const response = await recordEmailEvent({
    contact_id: created.contact.id,
    message_id: "node-message-2",
    event_type: "EMAIL_EVENT_TYPE_OPENED",
    http_method: "GET",
  });

  const event = response.email_event;
  assert.equal(event.event_type, "EMAIL_EVENT_TYPE_OPENED");
  assert.equal(event.is_bot, true);
  assert.equal(event.bot_type, "BOT_TYPE_USER_AGENT");
});

test("RecordEmailEvents gives each event a status", async () => {
  const response = await recordEmailEvents([
    { contact_id: created.contact.id, message_id: "node-batch-1", event_type: "EMAIL_EVENT_TYPE_DELIVERED" },
    {
      contact_id: created.contact.id,
      message_id: "node-batch-1",
      event_type: "EMAIL_EVENT_TYPE_OPENED",
      client_ip: "300.1.1.1",
    },
  ]);

  assert.equal(response.results.length, 2);
  const [stored, rejected] = response.results;
  assert.equal(stored.status.code, grpc.status.OK);
  assert.match(stored.response.email_event.id, UUID_PATTERN);
  assert.equal(stored.response.email_event.event_type, "EMAIL_EVENT_TYPE_DELIVERED");
  assert.equal(rejected.status.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(rejected.response, null);
  // A status inside a response message arrives as a plain message; its Any details decode alike.
  const details = decodeDetails(rejected.status.details);
  const info = details["google.rpc.ErrorInfo"];
  assert.ok(info, "the event's status has no google.rpc.ErrorInfo");
  assert.equal(info.reason, "VALIDATION_FAILED");
  assert.equal(info.domain, ERROR_DOMAIN);
  const badRequest = details["google.rpc.BadRequest"];
  assert.ok(badRequest, "the event's status has no google.rpc.BadRequest");
  assert.deepEqual(badRequest.field_violations.map((violation) => violation.field), ["client_ip"]);
});

test("invalid view lists every field", async () => {
  const error = await expectRpcError(
    trackProductView({
      email,
      product_id: "",
      product_name: "Premium Wireless Headphones",
      product_url: "not a url",
      price: { currency_code: "XYZ", units: 5 },
    }),
  );

  assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
  const { status, details } = richStatus(error);
  assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(status.message, error.details);
  const info = details["google.rpc.ErrorInfo"];
  assert.ok(info, "the status has no google.rpc.ErrorInfo");
  assert.equal(info.reason, "VALIDATION_FAILED");
  assert.equal(info.domain, ERROR_DOMAIN);
  assert.equal(info.metadata.violation_count, "3");
  const badRequest = details["google.rpc.BadRequest"];
  assert.ok(badRequest, "the status has no google.rpc.BadRequest");
  const fields = badRequest.field_violations.map((violation) => violation.field).sort();
  assert.deepEqual(fields, ["price.currency_code", "product_id", "product_url"]);
  for (const violation of badRequest.field_violations) {
    assert.notEqual(violation.description, "", `the violation of ${violation.field} has no description`);
  }
});
