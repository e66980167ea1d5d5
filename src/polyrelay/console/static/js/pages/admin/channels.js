// Channels: the upstreams. Status and cooldown, create and edit every field the API takes (the model
// list can be fetched from the upstream), test (one tiny real call with a chosen model, showing latency
// and result), fetch the upstream balance, enable or disable, delete; search, and batch actions on the
// selected channels.
import { del, get, patch, post } from '../../api.js';
import { dateTime, dollarsToMicros, jsonObject, microsToDollars, millis, money, splitList } from '../../format.js';
import { t } from '../../i18n.js';
import { attempt, badge, button, confirmDialog, deleteButton, field, formDialog, h, loading, pageHeader, table, toast } from '../../ui.js';

// Suggestions for the type field: the channel types polyrelay's adaptors serve (the API checks).
const TYPES = [
  'openai',
  'azure',
  'anthropic',
  'gemini',
  'midjourney',
  'suno',
  'luma',
  'kling',
  'flux',
  'stability',
  'recraft',
  'ideogram',
  'jina',
  'cohere',
];

export async function render(page) {
  const list = h('div');
  const selected = new Set();
  const search = field({ name: 'q', label: t('channels.search'), type: 'search' });
  const query = search.querySelector('input');
  let rows = [];
  const show = () => list.replaceChildren(channelTable(matching(rows, query.value), selected, refresh));
  const refresh = () =>
    loading(list, async () => {
      rows = (await get('/api/channels')).data;
      for (const id of selected) if (!rows.some((row) => row.id === id)) selected.delete(id);
      return channelTable(matching(rows, query.value), selected, refresh);
    });
  query.addEventListener('input', show);
  const batch = (action) => () => attempt(async () => {
    await runBatch(action, rows.filter((row) => selected.has(row.id)));
    await refresh();
  });
  page.append(
    pageHeader(
      t('nav.admin/channels'),
      button(t('channels.testAll'), () => attempt(async () => {
        await runBatch('test', rows.filter((row) => row.enabled));
        await refresh();
      })),
      button(t('channels.create'), () => edit(null, refresh), { kind: 'primary' }),
    ),
    h(
      'div',
      { class: 'filters' },
      search,
      h(
        'div',
        { class: 'filter-actions', role: 'group', 'aria-label': t('channels.batch') },
        button(t('channels.testSelected'), batch('test')),
        button(t('channels.enableSelected'), batch('enable')),
        button(t('channels.disableSelected'), batch('disable')),
        button(t('channels.deleteSelected'), batch('delete'), { kind: 'danger' }),
      ),
    ),
    h(
      'datalist',
      { id: 'channel-types' },
      TYPES.map((type) => h('option', { value: type })),
    ),
    list,
  );
  await refresh();
}

function status(row) {
  if (!row.enabled)
    return [
      badge(t('common.disabled'), 'off'),
      row.disabled_reason ? h('div', { class: 'muted small' }, row.disabled_reason) : null,
    ];
  if (row.cooldown_until && new Date(row.cooldown_until) > new Date()) {
    return [
      badge(t('channels.coolingDown'), 'busy'),
      h('div', { class: 'muted small' }, t('channels.until', { time: dateTime(row.cooldown_until) })),
    ];
  }
  return [
    badge(t('common.enabled'), 'ok'),
    row.failure_count ? h('div', { class: 'muted small' }, t('channels.failures', { count: row.failure_count })) : null,
  ];
}

function balance(row, refresh) {
  const fetchButton = button(t('channels.fetch'), () => fetchBalance(row, refresh), {
    'aria-label': `${t('channels.fetchBalance')} ${row.name}`,
  });
  if (row.balance_micros === null) return [h('span', { class: 'muted' }, '—'), h('div', {}, fetchButton)];
  const when = row.balance_updated_at
    ? t('channels.balanceFetched', { when: dateTime(row.balance_updated_at) })
    : t('channels.balanceNoted');
  return [money(row.balance_micros), h('div', { class: 'muted small' }, when), h('div', {}, fetchButton)];
}

async function fetchBalance(row, refresh) {
  const result = await attempt(() => post(`/api/channels/${row.id}/balance`));
  if (result) toast(t('channels.balanceToast', { name: row.name, balance: money(result.balance_micros) }));
  await refresh();
}

function lastTest(row) {
  if (!row.tested_at) return h('span', { class: 'muted' }, t('channels.neverTested'));
  const ok = row.test_result === 'ok';
  return [
    badge(ok ? t('channels.testOk') : t('channels.testFailed'), ok ? 'ok' : 'error'),
    ' ',
    millis(row.test_latency_ms),
    h('div', { class: 'muted small' }, ok ? dateTime(row.tested_at) : row.test_result),
  ];
}

/** The channels whose name, type, base URL or models contain `text`. */
function matching(rows, text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return rows;
  return rows.filter((row) =>
    [row.name, row.type, row.base_url, ...row.models].some((value) => value.toLowerCase().includes(needle)),
  );
}

/** Run `action` on each channel, a few at a time; one toast says how many succeeded and names the failures. */
async function runBatch(action, channels) {
  if (!channels.length) return toast(t('channels.noneSelected'));
  if (action === 'delete' && !(await confirmDialog(t('channels.confirmDeleteMany', { count: channels.length })))) return;
  const call = {
    test: (row) => post(`/api/channels/${row.id}/test`).then((result) => result.ok || Promise.reject(new Error(result.result))),
    enable: (row) => post(`/api/channels/${row.id}/enable`),
    disable: (row) => post(`/api/channels/${row.id}/disable`),
    delete: (row) => del(`/api/channels/${row.id}`),
  }[action];
  const failed = [];
  const queue = [...channels];
  const worker = async () => {
    for (let row = queue.shift(); row; row = queue.shift()) {
      await call(row).catch((error) => failed.push(`${row.name}: ${error.message}`));
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  const done = t('channels.batchDone', { ok: channels.length - failed.length, count: channels.length });
  toast(failed.length ? `${done} ${failed.join('; ')}` : done, failed.length ? 'error' : 'info');
}

/** The channel's concrete model names (no wildcards): what a test may ask for. */
function testModels(row) {
  return [...row.models, ...Object.keys(row.model_mapping)].filter((name) => !name.includes('*'));
}

function testCell(row) {
  const names = testModels(row);
  const picker =
    names.length > 1
      ? h(
          'select',
          { class: 'test-model', 'aria-label': t('channels.testModel', { name: row.name }) },
          names.map((name) => h('option', { value: name }, name)),
        )
      : null;
  return h('div', { class: 'test-pick' }, lastTest(row), picker);
}

function channelTable(data, selected, refresh) {
  return table(
    [
      {
        label: t('channels.select'),
        class: 'select',
        value: (row) =>
          h('input', {
            type: 'checkbox',
            checked: selected.has(row.id),
            'aria-label': t('channels.selectOne', { name: row.name }),
            onchange: (event) => (event.target.checked ? selected.add(row.id) : selected.delete(row.id)),
          }),
      },
      { label: 'ID', class: 'num', value: (row) => row.id },
      {
        label: t('channels.name'),
        value: (row) => [h('strong', {}, row.name), h('div', { class: 'muted small' }, row.base_url)],
      },
      { label: t('channels.type'), value: (row) => row.type },
      { label: t('common.status'), value: status },
      {
        label: t('channels.models'),
        value: (row) =>
          h('span', { class: 'clip', title: row.models.join(', ') }, row.models.join(', ') || t('channels.allModels')),
      },
      { label: t('channels.priorityWeight'), class: 'num', value: (row) => `${row.priority} / ${row.weight}` },
      { label: t('channels.lastTest'), class: 'test-cell', value: testCell },
      { label: t('channels.balanceColumn'), class: 'num', value: (row) => balance(row, refresh) },
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) => [
          button(t('channels.test'), (event) => test(row, event.currentTarget, refresh), {
            kind: 'primary',
            'aria-label': `${t('channels.test')} ${row.name}`,
          }),
          button(t('common.edit'), () => edit(row, refresh), { 'aria-label': `${t('common.edit')} ${row.name}` }),
          button(row.enabled ? t('common.disable') : t('common.enable'), () =>
            attempt(async () => {
              await post(`/api/channels/${row.id}/${row.enabled ? 'disable' : 'enable'}`);
              await refresh();
            }),
          ),
          deleteButton(t('channels.confirmDelete', { name: row.name }), `/api/channels/${row.id}`, refresh),
        ],
      },
    ],
    data,
    { empty: t('channels.none'), label: t('nav.admin/channels') },
  );
}

async function test(row, trigger, refresh) {
  trigger.disabled = true;
  trigger.textContent = t('channels.testing');
  const model = trigger.closest('tr')?.querySelector('select.test-model')?.value;
  const result = await attempt(() => post(`/api/channels/${row.id}/test`, model ? { model } : {}));
  if (result) {
    toast(
      t(result.ok ? 'channels.testPassed' : 'channels.testFailedToast', {
        name: row.name,
        latency: millis(result.latency_ms),
        result: result.result,
      }),
      result.ok ? 'info' : 'error',
    );
  }
  await refresh();
}

function edit(row, refresh) {
  const creating = row === null;
  const channel = row ?? {
    type: 'openai',
    priority: 0,
    weight: 1,
    enabled: true,
    timeout_s: 300,
    connect_timeout_s: 10,
    models: [],
    model_mapping: {},
    options: {},
    balance_micros: null,
  };
  return formDialog({
    title: creating ? t('channels.create') : t('channels.editTitle', { name: channel.name }),
    submitLabel: creating ? t('common.create') : t('common.save'),
    wide: true,
    fields: [
      h(
        'div',
        { class: 'row' },
        field({ name: 'name', label: t('channels.name'), value: channel.name ?? '', required: true }),
        field({ name: 'type', label: t('channels.type'), value: channel.type, list: 'channel-types', required: true }),
      ),
      field({
        name: 'base_url',
        label: t('channels.baseUrl'),
        type: 'url',
        value: channel.base_url ?? '',
        required: true,
        placeholder: 'https://api.openai.com',
      }),
      field({
        name: 'keys',
        label: t('channels.keys'),
        type: 'textarea',
        rows: 2,
        required: creating,
        autocomplete: 'off',
        hint: creating ? t('channels.keysHint') : t('channels.keysKeep', { hints: channel.keys.join(', ') }),
      }),
      field({
        name: 'models',
        label: t('channels.models'),
        type: 'textarea',
        rows: 2,
        value: channel.models.join(', '),
        hint: t('channels.modelsHint'),
      }),
      creating ? null : fetchModelsButton(channel),
      field({
        name: 'model_mapping',
        label: t('channels.mapping'),
        type: 'textarea',
        rows: 2,
        value: Object.keys(channel.model_mapping).length ? JSON.stringify(channel.model_mapping) : '',
        hint: t('channels.mappingHint'),
        spellcheck: 'false',
      }),
      h(
        'div',
        { class: 'row' },
        field({
          name: 'priority',
          label: t('channels.priority'),
          type: 'number',
          step: 1,
          value: channel.priority,
          required: true,
          hint: t('channels.priorityHint'),
        }),
        field({
          name: 'weight',
          label: t('channels.weight'),
          type: 'number',
          step: 1,
          min: 0,
          value: channel.weight,
          required: true,
        }),
        field({
          name: 'timeout_s',
          label: t('channels.timeout'),
          type: 'number',
          step: 'any',
          min: 0.001,
          value: channel.timeout_s,
          required: true,
        }),
        field({
          name: 'connect_timeout_s',
          label: t('channels.connectTimeout'),
          type: 'number',
          step: 'any',
          min: 0.001,
          value: channel.connect_timeout_s,
          required: true,
        }),
      ),
      field({
        name: 'options',
        label: t('channels.options'),
        type: 'textarea',
        rows: 2,
        value: Object.keys(channel.options).length ? JSON.stringify(channel.options) : '',
        hint: t('channels.optionsHint'),
        spellcheck: 'false',
      }),
      h(
        'div',
        { class: 'row' },
        field({
          name: 'balance',
          label: t('channels.balance'),
          value: microsToDollars(channel.balance_micros),
          inputmode: 'decimal',
          hint: t('channels.balanceHint'),
        }),
        field({ name: 'enabled', label: t('common.enabled'), type: 'checkbox', value: channel.enabled }),
      ),
    ],
    submit: async (values) => {
      const body = {
        name: values.name.trim(),
        type: values.type.trim(),
        base_url: values.base_url.trim(),
        models: splitList(values.models),
        model_mapping: jsonObject(values.model_mapping, t('channels.mapping')),
        priority: Number(values.priority),
        weight: Number(values.weight),
        timeout_s: Number(values.timeout_s),
        connect_timeout_s: Number(values.connect_timeout_s),
        options: jsonObject(values.options, t('channels.options')),
        balance_micros: values.balance.trim() ? dollarsToMicros(values.balance, { allowNegative: true }) : null,
      };
      // Sending enabled=true also clears failures and cooldown, so an edit sends it only when it changes.
      if (creating || values.enabled !== channel.enabled) body.enabled = values.enabled;
      const keys = splitList(values.keys);
      if (keys.length) body.keys = keys; // on edit, no keys typed keeps the current ones
      await (creating ? post('/api/channels', body) : patch(`/api/channels/${channel.id}`, body));
      await refresh();
    },
  });
}

/** Fill the dialog's model list with what the upstream lists (GET {base}/v1/models, nothing saved yet). */
function fetchModelsButton(channel) {
  return button(t('channels.fetchModels'), (event) =>
    attempt(async () => {
      const form = event.target.closest('form');
      const listed = await post(`/api/channels/${channel.id}/models`);
      form.elements.models.value = listed.models.join(', ');
      toast(t('channels.fetchedModels', { count: listed.models.length, url: listed.url }));
    }),
  );
}
