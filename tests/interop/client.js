// Interop: a Node.js gRPC client (@grpc/grpc-js + @grpc/proto-loader) that
// knows cityops only through its .proto files. It reports a case and reads
// it back, then checks that bad input gets precise statuses: undecodable
// bytes, an unknown method, a missing required field, an oversize message.
//
//   node client.js PROTO_DIR HOST:PORT
'use strict';
const assert = require('assert');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [protoDir, target] = process.argv.slice(2);
const def = loader.loadSync(path.join(protoDir, 'cityops/v1/service.proto'), {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(def).cityops.v1;
const cases = new v1.Cases(target, grpc.credentials.createInsecure());
const cluster = new v1.Cluster(target, grpc.credentials.createInsecure());
const deadline = () => ({ deadline: Date.now() + 10000 });

function call(client, method, req) {
  return new Promise((resolve, reject) => {
    client[method](req, deadline(), (err, resp) => err ? reject(err) : resolve(resp));
  });
}

// Send raw bytes to a method path, bypassing the generated serializers.
function raw(pathName, bytes) {
  const c = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c.makeUnaryRequest(pathName, (b) => b, (b) => b, bytes, deadline(),
      (err, resp) => { c.close(); resolve(err || resp); });
  });
}

async function expectCode(promise, code, what) {
  try {
    await promise;
  } catch (err) {
    assert.strictEqual(err.code, code, `${what}: got ${err.code} ${err.details}`);
    console.log(`ok   ${what}: ${grpc.status[err.code]} (${err.details})`);
    return;
  }
  assert.fail(`${what}: expected status ${grpc.status[code]}, got OK`);
}

async function main() {
  const st = await call(cluster, 'Status', {});
  assert.ok(st.nodes.length >= 1);
  console.log(`ok   Cluster/Status: leader ${st.leader_id}, ${st.nodes.length} nodes`);

  const ctx = { actor_id: 'node-client', role: 'ROLE_PUBLIC',
                client_id: `interop-${process.pid}`, seq: '1' };
  const rep = await call(cases, 'Report', {
    ctx, category_type: 'CATEGORY_TYPE_EVENT', major_code: '01',
    minor_code: '03', description: 'overflowing bin at the bus stop',
    location: { lon: 108.366, lat: 22.817, datum: 'DATUM_WGS84',
                grid_code: '45010200100102' },
    attachments: [{ sha256: 'b'.repeat(64), uri: 'https://photos.example/p.jpg',
                    media_type: 'image/jpeg', stage: 'ATTACHMENT_STAGE_REPORT' }],
  });
  assert.strictEqual(rep.case.state, 'CASE_STATE_REPORTED');
  assert.strictEqual(rep.case.source, 'CASE_SOURCE_PUBLIC');
  const id = rep.case.case_id;
  console.log(`ok   Cases/Report: case ${id} ${rep.case.tracking_no}`);

  // The retry key makes a second send return the same case.
  const again = await call(cases, 'Report', {
    ctx, category_type: 'CATEGORY_TYPE_EVENT', major_code: '01',
    minor_code: '03', description: 'overflowing bin at the bus stop' });
  assert.strictEqual(again.case.case_id, id);
  console.log(`ok   Cases/Report retried: same case ${id}`);

  const got = await call(cases, 'Get', { case_id: id,
    read: { consistency: 'CONSISTENCY_LINEARIZABLE' } });
  assert.strictEqual(got.case.description, 'overflowing bin at the bus stop');
  assert.strictEqual(got.case.attachments.length, 1);
  const hist = await call(cases, 'History', { case_id: id });
  assert.strictEqual(hist.events[0].type, 'CASE_EVENT_REPORT');
  console.log(`ok   Cases/Get + History: ${got.case.state}, ${hist.events.length} event(s)`);

  const r1 = await raw('/cityops.v1.Cases/Report', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
  assert.strictEqual(r1.code, grpc.status.INVALID_ARGUMENT, `garbage: ${r1.code} ${r1.details}`);
  console.log(`ok   undecodable bytes: INVALID_ARGUMENT (${r1.details})`);
  const r2 = await raw('/cityops.v1.Cases/Teleport', Buffer.alloc(0));
  assert.strictEqual(r2.code, grpc.status.UNIMPLEMENTED);
  console.log(`ok   unknown method: UNIMPLEMENTED (${r2.details})`);

  await expectCode(call(cases, 'Report', { category_type: 'CATEGORY_TYPE_EVENT',
    major_code: '01', minor_code: '03', description: 'no ctx' }),
    grpc.status.INVALID_ARGUMENT, 'missing ctx');
  await expectCode(call(cases, 'Accept', { ctx: { actor_id: 'c1', role: 'ROLE_INTAKE_CLERK' } }),
    grpc.status.INVALID_ARGUMENT, 'missing case_id');
  await expectCode(call(cases, 'Close', { ctx: { actor_id: 'l1', role: 'ROLE_SHIFT_LEADER' },
    case_id: id }), grpc.status.FAILED_PRECONDITION, 'close a reported case');
  await expectCode(call(cases, 'Report', { ctx: { actor_id: 'x', role: 'ROLE_PUBLIC' },
    category_type: 'CATEGORY_TYPE_EVENT', major_code: '01', minor_code: '03',
    description: 'x'.repeat(5 * 1024 * 1024) }),
    grpc.status.RESOURCE_EXHAUSTED, 'oversize message');

  const after = await call(cases, 'Get', { case_id: id,
    read: { consistency: 'CONSISTENCY_LINEARIZABLE' } });
  assert.deepStrictEqual(after.case, got.case);
  console.log('ok   case unchanged by the refused calls');
  console.log('interop: all checks passed');
}

main().catch((err) => { console.error('interop FAILED:', err); process.exit(1); });
