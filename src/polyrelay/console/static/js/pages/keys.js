// API keys: list, create (the key is shown once, with the base URL and examples), edit (a limit may reset
// per day, week or month), disable or enable, delete.
import { get, patch, post } from '../api.js';
import { periodField, periodSummary } from '../budget.js';
import { dateTime, dollarsToMicros, isoToLocal, localToIso, microsToDollars, money, splitList } from '../format.js';
import { keepKey } from '../gatewaykey.js';
import { t } from '../i18n.js';
import { exampleModel, snippetTabs } from '../snippets.js';
import { attempt, badge, button, deleteButton, field, formDialog, h, loading, openDialog, pageHeader, secretBox, table } from '../ui.js';

export async function render(page, { navigate }) {
  const list = h('div');
  const refresh = () => loading(list, () => keyTable(refresh));
  const info = await get('/api/public/info').catch(() => null);
  page.append(
    pageHeader(
      t('nav.keys'),
      button(t('keys.create'), () => create(refresh, navigate, info), { kind: 'primary' }),
    ),
    info ? baseUrlNote(info.base_url) : null,
    list,
  );
  await refresh();
}

function baseUrlNote(base) {
  return h(
    'p',
    { class: 'muted' },
    t('keys.baseUrl'),
    ' ',
    h('code', { class: 'base-url' }, base),
    ' · ',
    h('a', { href: '#/howto' }, t('keys.howToCall')),
  );
}

/** The columns every key list shows; `actions` adds the last one. */
export function keyColumns(actions, { owner = false } = {}) {
  // A limit that resets shows its period's spend and next reset.
  const usage = (row) =>
    periodSummary(row.period_budget) ??
    (row.limit_micros === null
      ? t('keys.usedUnlimited', { used: money(row.used_micros) })
      : t('keys.usedOf', { used: money(row.used_micros), limit: money(row.limit_micros) }));
  return [
    { label: t('keys.name'), class: 'keep', value: (row) => h('strong', {}, row.name) },
    owner ? { label: t('keys.owner'), value: (row) => row.user_name ?? `#${row.user_id}` } : null,
    { label: t('keys.key'), value: (row) => h('code', {}, row.key_hint) },
    {
      label: t('common.status'),
      class: 'keep',
      // active: neither the owner nor an administrator (admin_limits) disabled it
      value: (row) => (row.active ? badge(t('common.enabled'), 'ok') : badge(t('common.disabled'), 'off')),
    },
    { label: t('keys.usage'), value: usage },
    { label: t('keys.models'), value: (row) => (row.models?.length ? row.models.join(', ') : t('keys.allModels')) },
    {
      label: t('keys.ips'),
      value: (row) => (row.allowed_ips?.length ? row.allowed_ips.join(', ') : t('keys.anyIp')),
    },
    { label: t('keys.expires'), value: (row) => (row.expires_at ? dateTime(row.expires_at) : t('keys.never')) },
    { label: t('keys.lastUsed'), value: (row) => dateTime(row.last_used_at) },
    { label: t('common.actions'), class: 'row-actions', value: actions },
  ].filter(Boolean);
}

async function keyTable(refresh) {
  const { data } = await get('/api/me/tokens');
  return table(
    keyColumns((row) => [
      button(t('common.edit'), () => edit(row, `/api/me/tokens/${row.id}`, refresh), {
        'aria-label': `${t('common.edit')} ${row.name}`,
      }),
      toggleButton(row, `/api/me/tokens/${row.id}`, refresh),
      deleteButton(t('keys.confirmDelete', { name: row.name }), `/api/me/tokens/${row.id}`, refresh, { 'aria-label': `${t('common.delete')} ${row.name}` }),
    ]),
    data,
    { empty: t('keys.none'), label: t('nav.keys') },
  );
}

export function toggleButton(row, path, refresh) {
  return button(row.enabled ? t('common.disable') : t('common.enable'), () =>
    attempt(async () => {
      await patch(path, { enabled: !row.enabled });
      await refresh();
    }),
  );
}

/** The fields of the create and edit dialogs, filled from `row` when editing. */
function keyFields(row) {
  return [
    field({ name: 'name', label: t('keys.name'), required: true, maxlength: 128, value: row?.name ?? '' }),
    field({
      name: 'limit',
      label: t('keys.limit'),
      inputmode: 'decimal',
      hint: t('keys.limitHint'),
      value: microsToDollars(row?.limit_micros),
    }),
    periodField(row?.budget_period ?? '', t('budget.keyHint')),
    field({ name: 'models', label: t('keys.models'), hint: t('keys.modelsHint'), value: (row?.models ?? []).join(', ') }),
    field({
      name: 'expires',
      label: t('keys.expires'),
      type: 'datetime-local',
      hint: t('keys.expiresHint'),
      value: row?.expires_at ? isoToLocal(row.expires_at) : '',
    }),
    field({
      name: 'ips',
      label: t('keys.ips'),
      type: 'textarea',
      rows: 2,
      hint: t('keys.ipsHint'),
      value: (row?.allowed_ips ?? []).join('\n'),
    }),
  ];
}

export function keyBody(values) {
  const models = splitList(values.models);
  const ips = splitList(values.ips);
  return {
    name: values.name.trim(),
    limit_micros: values.limit.trim() ? dollarsToMicros(values.limit) : null,
    budget_period: values.budget_period || null,
    models: models.length ? models : null,
    expires_at: localToIso(values.expires),
    allowed_ips: ips.length ? ips : null,
  };
}

/** Edit a key's name and limits (PATCH `path`); on the admin page these are the limits an administrator imposes. */
export async function edit(row, path, refresh) {
  const saved = await formDialog({
    title: t('keys.editTitle', { name: row.name }),
    fields: keyFields(row),
    submit: (values) => patch(path, keyBody(values)),
  });
  if (saved) await refresh();
}

async function create(refresh, navigate, info) {
  const created = await formDialog({
    title: t('keys.create'),
    submitLabel: t('common.create'),
    fields: keyFields(null),
    submit: (values) => post('/api/me/tokens', keyBody(values)),
  });
  if (!created) return;
  await refresh();
  const prices = await get('/api/me/prices').catch(() => ({ data: [] }));
  showOnce(created, navigate, info?.base_url ?? location.origin, exampleModel(prices.data, created.models));
}

function showOnce(created, navigate, base, model) {
  const dialog = openDialog(
    t('keys.createdTitle'),
    h(
      'div',
      {},
      h('p', { class: 'warning' }, t('keys.shownOnce')),
      secretBox(created.key, t('keys.newKey', { name: created.name })),
      secretBox(base, t('howto.baseUrl')),
      h('h3', {}, t('keys.tryIt')),
      snippetTabs(base, created.key, model),
      h(
        'footer',
        { class: 'dialog-actions' },
        button(t('keys.usePlayground'), () => {
          keepKey(created.key);
          dialog.close();
          navigate('#/playground');
        }),
        button(t('common.done'), () => dialog.close(), { kind: 'primary' }),
      ),
    ),
    { wide: true },
  );
}
