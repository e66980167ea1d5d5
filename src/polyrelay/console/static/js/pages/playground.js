// Playground: a chat through the gateway itself (POST /v1/chat/completions, streamed), with one
// of the user's keys, showing tokens as they arrive.
import { keepKey, keptKey, relayFetch } from '../gatewaykey.js';
import { t } from '../i18n.js';
import { attempt, button, field, h, pageHeader } from '../ui.js';
import { sseData } from '../sse.js';

const MODEL = 'polyrelay.playground-model';

export async function render(page, { refreshMe }) {
  const messages = [];
  const transcript = h('div', { class: 'transcript', 'aria-live': 'polite', 'aria-label': t('playground.transcript') });
  const status = h('p', { class: 'muted small', role: 'status' });
  const send = h('button', { type: 'submit', class: 'primary' }, t('playground.send'));
  const stop = button(t('playground.stop'), () => controller?.abort(), { disabled: true });
  const form = h(
    'form',
    { class: 'form playground' },
    h(
      'div',
      { class: 'row' },
      field({
        name: 'model',
        label: t('playground.model'),
        required: true,
        value: localStorage.getItem(MODEL) ?? 'gpt-4o-mini',
      }),
      field({
        name: 'key',
        label: t('playground.key'),
        type: 'password',
        autocomplete: 'off',
        hint: keptKey() ? t('playground.keyKept') : t('playground.keyHint'),
      }),
    ),
    field({ name: 'message', label: t('playground.message'), type: 'textarea', rows: 4, required: true }),
    h(
      'div',
      { class: 'dialog-actions' },
      button(t('playground.clear'), () => {
        messages.length = 0;
        transcript.replaceChildren();
        status.textContent = '';
      }),
      stop,
      send,
    ),
    status,
  );
  let controller = null;

  form.elements.message.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const model = form.elements.model.value.trim();
    const pasted = form.elements.key.value.trim();
    if (pasted) keepKey(pasted);
    const key = pasted || keptKey();
    if (!key) {
      status.textContent = t('playground.needKey');
      form.elements.key.focus();
      return;
    }
    localStorage.setItem(MODEL, model);
    messages.push({ role: 'user', content: form.elements.message.value });
    transcript.append(bubble('user', form.elements.message.value));
    form.elements.message.value = '';
    const answer = h('div', { class: 'text' });
    const reply = h('div', { class: 'bubble assistant' }, h('span', { class: 'who' }, model), answer);
    transcript.append(reply);
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    status.textContent = t('playground.waiting');
    const started = performance.now();
    try {
      const streamed = await stream(model, key, messages, answer, controller.signal);
      messages.push({ role: 'assistant', content: streamed.text });
      status.textContent = t('playground.done', {
        seconds: ((performance.now() - started) / 1000).toFixed(2),
        tokens: streamed.usage ? streamed.usage.completion_tokens : '—',
      });
    } catch (error) {
      messages.pop(); // the question goes unanswered; what arrived stays on screen
      reply.append(
        h(
          'p',
          { class: error.name === 'AbortError' ? 'muted small' : 'form-error' },
          error.name === 'AbortError' ? t('playground.stopped') : error.message,
        ),
      );
      status.textContent = '';
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
    await attempt(refreshMe); // the top bar's balance, after what this answer cost
  });
  page.append(pageHeader(t('nav.playground')), h('p', { class: 'muted' }, t('playground.intro')), transcript, form);
  return () => controller?.abort();
}

function bubble(role, text) {
  return h(
    'div',
    { class: `bubble ${role}` },
    h('span', { class: 'who' }, t(`playground.${role}`)),
    h('div', { class: 'text' }, text),
  );
}

/** Stream one answer into `target`; resolves with its text and the usage the gateway reported. */
async function stream(model, key, messages, target, signal) {
  const response = await relayFetch(
    '/v1/chat/completions',
    key,
    { model, messages, stream: true, stream_options: { include_usage: true } },
    signal,
  );
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(body?.error?.message ?? t('error.http', { status: response.status }));
  }
  let text = '';
  let usage = null;
  for await (const data of sseData(response)) {
    if (data === '[DONE]') break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    const piece = chunk.choices?.[0]?.delta?.content ?? '';
    if (piece) {
      text += piece;
      target.textContent = text;
    }
    usage = chunk.usage ?? usage;
  }
  return { text, usage };
}
