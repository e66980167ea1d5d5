// Copy-paste examples of calling the gateway: one per SDK or client, for a base URL, a key and a model.
// Shared by the "how to call" page and the keys page (the new-key dialog fills in the real key).
import { t } from './i18n.js';
import { h, secretBox, uid } from './ui.js';

export const KEY_PLACEHOLDER = 'YOUR_POLYRELAY_KEY';

/** [id, tab label, code] for each way of calling; `model` is a chat model to put in the examples. */
export function snippets(base, key = KEY_PLACEHOLDER, model = 'gpt-4o-mini') {
  return [
    ['openai', 'OpenAI (Python)', `from openai import OpenAI

client = OpenAI(base_url="${base}/v1", api_key="${key}")
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "Hello!"}],
)
print(reply.choices[0].message.content)`],
    ['anthropic', 'Anthropic (Python)', `import anthropic

client = anthropic.Anthropic(base_url="${base}", api_key="${key}")
message = client.messages.create(
    model="${model}",
    max_tokens=1024,
    messages=[{"role": "user", "content": "Hello!"}],
)
print(message.content[0].text)`],
    ['genai', 'Google GenAI (Python)', `from google import genai
from google.genai import types

client = genai.Client(api_key="${key}", http_options=types.HttpOptions(base_url="${base}"))
response = client.models.generate_content(model="${model}", contents="Hello!")
print(response.text)`],
    ['curl', 'curl', `curl ${base}/v1/chat/completions \\
  -H "Authorization: Bearer ${key}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}]}'`],
    ['midjourney', t('howto.midjourney'), `# Any midjourney-proxy client: base URL ${base}, secret = your key.
curl ${base}/mj/submit/imagine \\
  -H "mj-api-secret: ${key}" \\
  -H "Content-Type: application/json" \\
  -d '{"prompt": "a lighthouse at dawn"}'
# → {"code": 1, "result": "<task id>"}; then poll:
curl ${base}/mj/task/<task id>/fetch -H "mj-api-secret: ${key}"`],
  ];
}

/** A model for the examples from a price list's rows (`allowed`: a key's model list, null for any): one priced
 * per token (a chat model, most likely), so the examples work as pasted; undefined when there is none. */
export function exampleModel(rows, allowed = null) {
  return rows.find((row) => row.priced && row.input_per_mtok_micros !== null && (!allowed || allowed.includes(row.model)))
    ?.model;
}

/** Tabs (WAI-ARIA tab pattern: arrow keys move between tabs), each a code box with a copy button. */
export function snippetTabs(base, key, model) {
  const list = h('div', { role: 'tablist', class: 'tabs', 'aria-label': t('howto.examples') });
  const panels = [];
  const tabs = [];
  const select = (index, focus = false) => {
    tabs.forEach((tab, i) => {
      tab.setAttribute('aria-selected', String(i === index));
      tab.tabIndex = i === index ? 0 : -1;
      panels[i].hidden = i !== index;
    });
    if (focus) tabs[index].focus();
  };
  snippets(base, key, model).forEach(([id, label, code], index) => {
    const tabId = uid(`tab-${id}`);
    const panelId = uid(`panel-${id}`);
    const tab = h('button', { type: 'button', role: 'tab', id: tabId, 'aria-controls': panelId, 'data-tab': id }, label);
    tab.addEventListener('click', () => select(index));
    tab.addEventListener('keydown', (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select((index + step + tabs.length) % tabs.length, true);
    });
    tabs.push(tab);
    panels.push(h('div', { role: 'tabpanel', id: panelId, 'aria-labelledby': tabId, class: 'snippet' }, secretBox(code, label)));
  });
  list.append(...tabs);
  select(0);
  return h('div', { class: 'snippets' }, list, panels);
}
