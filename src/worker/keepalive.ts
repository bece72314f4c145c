import type WebSocket from 'ws';

/**
 * Keeps a WebSocket honest: a ping (control frame) every `intervalMs`; a peer that has answered
 * nothing (no pong, no message) by the next ping is declared dead, so a half-open socket is noticed
 * within two intervals. Used by both ends of the worker connection. Returns a stop function; it also
 * stops when the socket closes.
 */
export function keepAlive(ws: WebSocket, intervalMs: number, onDead: () => void): () => void {
  let answered = true;
  const heard = () => (answered = true);
  ws.on('pong', heard);
  ws.on('message', heard);
  const timer = setInterval(() => {
    // Judged after pending I/O: a pong that arrived while this process was busy (a long training
    // step) is read first, and does not count as silence.
    setImmediate(() => {
      if (ws.readyState !== ws.OPEN) return stop();
      if (!answered) {
        stop();
        onDead();
        return;
      }
      answered = false;
      ws.ping();
    });
  }, intervalMs);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    ws.off('pong', heard);
    ws.off('message', heard);
    ws.off('close', stop);
  };
  ws.on('close', stop);
  return stop;
}
