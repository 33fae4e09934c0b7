// First-start initialisation of the pipeline database (run by the mongo image's entrypoint
// with the root user, only when /data/db is empty). Idempotent anyway: re-running it changes
// nothing, so an operator may run it by hand after a restore:
//   mongosh -u root -p ... --authenticationDatabase admin /docker-entrypoint-initdb.d/10-app-user-and-indexes.js
//
// The application user gets exactly what the processor does (processor/store.py) on MONGO_APP_DB
// and nothing else: read (find, distinct, aggregate, count), insert, and create its indexes
// (createCollection: createIndexes on a collection that does not exist yet creates it). No
// update, delete, drop, user or role management, no other database, no server commands
// (tests/integration/test_mongo7.py checks both sides against mongo:7.0). A re-run converges
// the role and the user's roles to these (the password is left as is). The index names equal those of
// processor/store.py (_INDEXES): the processor's own create_index calls at start then find
// them already there instead of failing on "same keys, different name".

const dbName = process.env.MONGO_APP_DB;
const appUser = process.env.MONGO_APP_USER;
const appPassword = process.env.MONGO_APP_PASSWORD;
if (!dbName || !appUser || !appPassword) {
  throw new Error("MONGO_APP_DB, MONGO_APP_USER and MONGO_APP_PASSWORD must be set");
}

const app = db.getSiblingDB(dbName);

const roleName = "gpuCostProcessor";
const privileges = [
  {
    resource: { db: dbName, collection: "" },
    actions: ["find", "insert", "createIndex", "createCollection"],
  },
];
if (app.getRole(roleName) === null) {
  app.createRole({ role: roleName, privileges: privileges, roles: [] });
  print(`created role ${roleName} on ${dbName}`);
} else {
  app.updateRole(roleName, { privileges: privileges, roles: [] });
  print(`role ${roleName} on ${dbName} set to its privileges`);
}

const roles = [{ role: roleName, db: dbName }];
if (app.getUser(appUser) === null) {
  app.createUser({ user: appUser, pwd: appPassword, roles: roles });
  print(`created user ${appUser} with ${roleName} on ${dbName}`);
} else {
  app.updateUser(appUser, { roles: roles });
  print(`user ${appUser} exists; roles set to ${roleName} (password left as is)`);
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
