// First-start initialisation of the pipeline database (run by the mongo image's entrypoint
// with the root user, only when /data/db is empty). Idempotent anyway: re-running it changes
// nothing, so an operator may run it by hand after a restore:
//   mongosh -u root -p ... --authenticationDatabase admin /docker-entrypoint-initdb.d/10-app-user-and-indexes.js
//
// The application user gets readWrite on MONGO_APP_DB and nothing else: it cannot read other
// databases, create users or change the server. The index names equal those of
// processor/store.py (_INDEXES): the processor's own create_index calls at start then find
// them already there instead of failing on "same keys, different name".

const dbName = process.env.MONGO_APP_DB;
const appUser = process.env.MONGO_APP_USER;
const appPassword = process.env.MONGO_APP_PASSWORD;
if (!dbName || !appUser || !appPassword) {
  throw new Error("MONGO_APP_DB, MONGO_APP_USER and MONGO_APP_PASSWORD must be set");
}

const app = db.getSiblingDB(dbName);

if (app.getUser(appUser) === null) {
  app.createUser({
    user: appUser,
    pwd: appPassword,
    roles: [{ role: "readWrite", db: dbName }],
  });
  print(`created user ${appUser} with readWrite on ${dbName}`);
} else {
  print(`user ${appUser} exists; left as is`);
}

// One event per document, _id = event_id (the idempotency key, unique by itself).
// The same as processor/store.py's _INDEXES (tests/integration/test_compose.py compares them).
const indexes = {
  gpu_metrics: [
    { name: "gpu_key_ts", key: { gpu_key: 1, ts_us: 1 } },
    { name: "partition_gpu_ts", key: { kafka_partition: 1, gpu_key: 1, ts_us: 1, _id: 1 } },
    { name: "minute", key: { minute: 1 } },
    { name: "anomalies_ts", key: { anomaly_count: 1, ts_us: 1 } },
  ],
  token_usage: [
    { name: "gpu_key_ts", key: { gpu_key: 1, ts_us: 1 } },
    { name: "partition_gpu_ts", key: { kafka_partition: 1, gpu_key: 1, ts_us: 1 } },
    { name: "minute", key: { minute: 1 } },
    { name: "model_minute", key: { model: 1, minute: 1 } },
    { name: "request_id", key: { request_id: 1 } },
  ],
};

for (const [collection, specs] of Object.entries(indexes)) {
  // createIndexes with specs that already exist (same keys, same names) is a no-op.
  const result = app.runCommand({ createIndexes: collection, indexes: specs });
  if (result.ok !== 1) {
    throw new Error(`createIndexes on ${collection} failed: ${JSON.stringify(result)}`);
  }
  print(`indexes of ${dbName}.${collection}: ${specs.map((s) => s.name).join(", ")}`);
}
