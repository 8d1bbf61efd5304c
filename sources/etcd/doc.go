// Package etcd is the etcd registry source: it lists a key prefix, then
// watches it from the listed revision, and reports the complete state of the
// registry after every change. It also registers instances (`sluice
// register`). The embedded etcd of the zero-setup default is package
// embedded.
//
// Three key layouts are understood (Config.Format):
//
//   - "sluice" (default): <prefix>/<service>/<host:port> with an empty value,
//     a bare "host:port" (equal to the key's), or a JSON object
//     {"status", "weight", "zone", "region", "metadata", "timestamp"} (see
//     Registration). Unknown JSON fields are ignored; known fields of the
//     wrong type are errors.
//   - "kratos": go-kratos' etcd registry, <prefix>/<name>/<id> (prefix
//     default /microservices) with its ServiceInstance JSON. The instance
//     is the first grpc:// (or grpcs://) endpoint, else the first http://
//     (or https://) one; metadata is kept, "version" is added from the
//     instance's version, and metadata "weight" (read by kratos' own
//     selector) becomes the weight.
//   - "gozero": go-zero's discov publisher, <key>/<id> at the keyspace root
//     (or under a prefix) with a "host:port" value; the key is the service.
//
// An entry that does not parse is skipped with a diagnostic naming its key
// (and JSON field); every other entry is served. Two keys of one service
// with the same host:port: the first key in byte order is served, the other
// gets a warning. Addresses must be IP literals; host names are not resolved.
// When the prefix is the keyspace root, keys without the layout's shape are
// other applications' keys and are ignored silently.
//
// Watching: a ranged Get of the prefix (paged, at one revision), then a
// Watch from that revision + 1 with WithRequireLeader, so no change is
// missed or applied twice. After each batch of watch responses the complete
// state is sent, unless it did not change. A watch that falls behind
// compaction (ErrCompacted) re-lists. etcd's client retries a lost
// connection silently, so the source watches the connection (down for more
// than 2s) and asks for watch progress every 5s (unanswered for 5s: etcd
// is gone though the connection looks up; etcd >= 3.4 answers these); either
// becomes one Err event per outage while the consumer keeps the last state,
// retries back off exponentially with jitter from 100ms to 10s, and the
// first successful re-list is sent as a fresh state.
package etcd
