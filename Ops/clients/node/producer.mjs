#!/usr/bin/env node
// Enqueues one chat job through llmq's gateway and prints its tokens as they arrive.
// Node's standard library only (fetch, streams): no Redis client, just HTTP.
//
//   LLMQ_GATEWAY_URL=http://127.0.0.1:8080 LLMQ_API_KEY=KEY node producer.mjs MODEL "PROMPT"
//
// Prints the text as it streams, then the terminal event on a line of its own.
// Exits 0 on done, 1 on error, 2 when the gateway refused the job or no terminal event came in time.
import { randomUUID } from 'node:crypto';

if (process.argv.length !== 4) {
  console.error('usage: producer.mjs MODEL PROMPT');
  process.exit(2);
}
const [model, prompt] = process.argv.slice(2);
const base = process.env.LLMQ_GATEWAY_URL ?? 'http://127.0.0.1:8080';
const headers = { 'content-type': 'application/json' };
if (process.env.LLMQ_API_KEY) headers.authorization = `Bearer ${process.env.LLMQ_API_KEY}`;
const timeoutMs = 1000 * Number(process.env.LLMQ_TIMEOUT_S ?? '120');
const signal = AbortSignal.timeout(timeoutMs);
const id = `js-${randomUUID()}`;

async function main() {
  // POST /v1/jobs takes a protocol job as it is and answers 202 once it is queued.
  const job = { id, model, messages: [{ role: 'user', content: prompt }] };
  const queued = await fetch(`${base}/v1/jobs`, { method: 'POST', headers, body: JSON.stringify(job), signal });
  if (queued.status !== 202) {
    console.error(`the gateway refused the job (${queued.status}): ${await queued.text()}`);
    return 2;
  }
  // The events endpoint replays the request's log from its start, then follows it live,
  // so opening it after the push misses nothing.
  const events = await fetch(`${base}/v1/requests/${id}/events`, { headers, signal });
  if (!events.ok) {
    console.error(`cannot follow ${id} (${events.status}): ${await events.text()}`);
    return 2;
  }
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const bytes of events.body) {
    buffered += decoder.decode(bytes, { stream: true });
    // SSE: events end with a blank line; each `data:` line holds one protocol event line.
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const field of block.split('\n')) {
        if (!field.startsWith('data:')) continue;
        const line = field.slice(5).trimStart();
        const event = JSON.parse(line);
        if (event.type === 'chunk') process.stdout.write(event.text);
        else if (event.type === 'retry') process.stderr.write(`\n[attempt ${event.attempt} starts over: ${event.reason}]\n`);
        else if (event.type === 'done' || event.type === 'error') {
          process.stdout.write(`\n${line}\n`);
          return event.type === 'done' ? 0 : 1;
        }
      }
    }
  }
  console.error(`the event stream of ${id} ended without a terminal event`);
  return 2;
}

main().then(
  (code) => { process.exitCode = code; },
  (error) => {
    console.error(error.name === 'TimeoutError' ? `no terminal event for ${id} within ${timeoutMs / 1000} s` : `${error.message}${error.cause ? `: ${error.cause.message}` : ''}`);
    process.exitCode = 2;
  },
);
