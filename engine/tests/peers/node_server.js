// Node `ws` echo server for ringcast's interop tests. Prints its port, echoes every
// message (text stays text), closes with CODE on a text "close:CODE:REASON", prints the
// close code a client sends, and stops on its own after argv[2] seconds.
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
wss.on('listening', () => console.log(`port ${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text && text.startsWith('close:')) {
      const [, code, reason] = text.split(':');
      ws.close(Number(code), reason);
      return;
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on('close', (code) => console.log(`closed ${code}`));
});
setTimeout(() => process.exit(0), (Number(process.argv[2]) || 60) * 1000);
