// Server-sent events read from a fetch() body as they arrive (EventSource cannot POST).

/** Yields the `data` of each event in `response`'s body, in order. */
export async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const data = dataOf(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (data !== null) yield data;
    }
  }
  const last = dataOf(buffer);
  if (last !== null) yield last;
}

function dataOf(event) {
  const lines = event.split('\n').filter((line) => line.startsWith('data:'));
  return lines.length ? lines.map((line) => line.slice(line.startsWith('data: ') ? 6 : 5)).join('\n') : null;
}
