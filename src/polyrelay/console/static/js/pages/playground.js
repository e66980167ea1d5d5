// Playground: a chat through the gateway itself (POST /v1/chat/completions, streamed), with a key
// pasted or kept for the tab, else the session's own playground key (api/admin/playground.py);
// a model picker, system prompt and parameters; tokens and the cost as they arrive.
import { get, post } from '../api.js';
import { money } from '../format.js';
import { keepKey, keptKey, relayFetch } from '../gatewaykey.js';
import { t } from '../i18n.js';
import { attempt, button, field, h, pageHeader, uid } from '../ui.js';
import { sseData } from '../sse.js';

const MODEL = 'polyrelay.playground-model';

export async function render(page, { refreshMe }) {
  const messages = [];
  const prices = await get('/api/me/prices').catch(() => ({ data: [] }));
  const modelList = h('datalist', { id: uid('models') }, prices.data.map((row) => h('option', { value: row.model })));
  const priceOf = (model) => prices.data.find((row) => row.model === model && row.priced);
  const transcript = h('div', { class: 'transcript', role: 'log', 'aria-live': 'polite', 'aria-label': t('playground.transcript') });
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
        value: localStorage.getItem(MODEL) ?? prices.data[0]?.model ?? 'gpt-4o-mini',
        list: modelList.id,
        autocomplete: 'off',
      }),
      field({
        name: 'key',
        label: t('playground.key'),
        type: 'password',
        autocomplete: 'off',
        hint: keptKey() ? t('playground.keyKept') : t('playground.keyOptional'),
      }),
    ),
    modelList,
    field({ name: 'system', label: t('playground.system'), type: 'textarea', rows: 2 }),
    h(
      'div',
      { class: 'row' },
      field({ name: 'temperature', label: t('playground.temperature'), type: 'number', min: 0, max: 2, step: 0.1 }),
      field({ name: 'max_tokens', label: t('playground.maxTokens'), type: 'number', min: 1, step: 1 }),
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
    const key = pasted || keptKey() || (await attempt(sessionKey));
    if (!key) return;
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
      const system = form.elements.system.value.trim();
      const body = {
        model,
        messages: system ? [{ role: 'system', content: system }, ...messages] : messages,
        ...numbers(form),
      };
      const streamed = await stream(body, key, answer, controller.signal);
      messages.push({ role: 'assistant', content: streamed.text });
      const cost = estimate(priceOf(model), streamed.usage);
      status.textContent = t('playground.done', {
        seconds: ((performance.now() - started) / 1000).toFixed(2),
        tokens: streamed.usage ? streamed.usage.completion_tokens : '—',
      }) + (cost === null ? '' : ` · ${t('playground.cost', { cost: money(cost) })}`);
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

/** The session's playground key (made or renewed by the API), kept for this tab. */
async function sessionKey() {
  const { key } = await post('/api/me/playground-key');
  keepKey(key);
  return key;
}

/** Temperature and max_tokens when filled in. */
function numbers(form) {
  const values = {};
  if (form.elements.temperature.value !== '') values.temperature = Number(form.elements.temperature.value);
  if (form.elements.max_tokens.value !== '') values.max_tokens = Number(form.elements.max_tokens.value);
  return values;
}

/** What the answer cost in micro-USD, from the usage reported and the user's price (group applied); null if unknown. */
function estimate(price, usage) {
  if (!price || !usage) return null;
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  const rate = (name) => price[`${name}_micros`] ?? 0;
  const cachedRate = price.cached_input_per_mtok_micros ?? rate('input_per_mtok');
  const perToken =
    (usage.prompt_tokens - cached) * rate('input_per_mtok') + cached * cachedRate + usage.completion_tokens * rate('output_per_mtok');
  return Math.round(perToken / 1_000_000) + rate('per_request');
}

/** Stream one answer into `target`; resolves with its text and the usage the gateway reported. */
async function stream(body, key, target, signal) {
  const response = await relayFetch(
    '/v1/chat/completions',
    key,
    { ...body, stream: true, stream_options: { include_usage: true } },
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
