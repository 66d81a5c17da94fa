// Node `ws` client for ringcast's interop tests: text, binary, fragmented, compressed,
// ping/pong with the echo server at argv[2], then a close with 4003. One line per check.
const WebSocket = require('ws');

const ws = new WebSocket(process.argv[2], { perMessageDeflate: true });
const steps = [];
let expect = null;
const fail = (why) => { console.log(`FAIL ${why}`); process.exit(1); };
setTimeout(() => fail('timeout'), 20000);

ws.on('open', () => {
  if (!(ws.extensions || '').includes('permessage-deflate')) fail(`no deflate: ${ws.extensions}`);
  console.log('compression negotiated');
  next();
});
ws.on('message', (data, isBinary) => {
  if (!expect) fail('unexpected message');
  const got = isBinary ? Buffer.from(data) : data.toString();
  const ok = isBinary ? Buffer.compare(got, expect.value) === 0 : got === expect.value;
  if (!ok || isBinary !== expect.binary) fail(`${expect.name} mismatch`);
  console.log(`${expect.name} ok`);
  next();
});
ws.on('pong', (data) => {
  if (data.toString() !== 'node-ping') fail('pong payload');
  console.log('ping ok');
  ws.close(4003, 'from node');
});
ws.on('close', (code) => { console.log(`closed ${code}`); process.exit(0); });
ws.on('error', (err) => fail(err.message));

function next() {
  const step = steps.shift();
  if (!step) { ws.ping('node-ping'); return; }
  expect = step;
  step.send();
}
const big = 'compress me please '.repeat(5000);
steps.push({ name: 'text', value: 'héllo ringcast', binary: false, send: () => ws.send('héllo ringcast') });
steps.push({ name: 'binary', value: Buffer.from([0, 1, 2, 254, 255]), binary: true, send: () => ws.send(Buffer.from([0, 1, 2, 254, 255])) });
steps.push({ name: 'fragmented', value: 'fragmented text', binary: false, send: () => {
  ws.send('frag', { fin: false });
  ws.send('mented ', { fin: false });
  ws.send('text', { fin: true });
} });
steps.push({ name: 'compressed', value: big, binary: false, send: () => ws.send(big, { compress: true }) });
