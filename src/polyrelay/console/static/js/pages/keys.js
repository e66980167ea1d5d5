// API keys: list, create (the key is shown once), set a limit (once or per day, week, month), disable or
// enable, delete.
import { get, patch, post } from '../api.js';
import { periodField, periodSummary } from '../budget.js';
import { dateTime, dollarsToMicros, localToIso, microsToDollars, money, splitList } from '../format.js';
import { keepKey } from '../gatewaykey.js';
import { t } from '../i18n.js';
import { attempt, badge, button, deleteButton, field, formDialog, h, loading, openDialog, pageHeader, secretBox, table } from '../ui.js';

export async function render(page, { navigate }) {
  const list = h('div');
  const refresh = () => loading(list, () => keyTable(refresh));
  page.append(
    pageHeader(
      t('nav.keys'),
      button(t('keys.create'), () => create(refresh, navigate), { kind: 'primary' }),
    ),
    list,
  );
  await refresh();
}

async function keyTable(refresh) {
  const { data } = await get('/api/me/tokens');
  // A limit that resets shows its period's spend and next reset; the total spent stays in the title.
  const usage = (row) =>
    periodSummary(row.period_budget) ??
    (row.limit_micros === null
      ? t('keys.usedUnlimited', { used: money(row.used_micros) })
      : t('keys.usedOf', { used: money(row.used_micros), limit: money(row.limit_micros) }));
  return table(
    [
      { label: t('keys.name'), value: (row) => h('strong', {}, row.name) },
      { label: t('keys.key'), value: (row) => h('code', {}, row.key_hint) },
      {
        label: t('common.status'),
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
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) => [
          button(t('budget.edit'), () => editLimit(row, refresh), { 'aria-label': `${t('budget.edit')} ${row.name}` }),
          button(row.enabled ? t('common.disable') : t('common.enable'), () =>
            attempt(async () => {
              await patch(`/api/me/tokens/${row.id}`, { enabled: !row.enabled });
              await refresh();
            }),
          ),
          deleteButton(t('keys.confirmDelete', { name: row.name }), `/api/me/tokens/${row.id}`, refresh, { 'aria-label': `${t('common.delete')} ${row.name}` }),
        ],
      },
    ],
    data,
    { empty: t('keys.none'), label: t('nav.keys') },
  );
}

async function create(refresh, navigate) {
  const created = await formDialog({
    title: t('keys.create'),
    submitLabel: t('common.create'),
    fields: [
      field({ name: 'name', label: t('keys.name'), required: true, maxlength: 128 }),
      field({ name: 'limit', label: t('keys.limit'), inputmode: 'decimal', hint: t('keys.limitHint') }),
      periodField('', t('budget.keyHint')),
      field({ name: 'models', label: t('keys.models'), hint: t('keys.modelsHint') }),
      field({ name: 'expires', label: t('keys.expires'), type: 'datetime-local', hint: t('keys.expiresHint') }),
      field({ name: 'ips', label: t('keys.ips'), type: 'textarea', rows: 2, hint: t('keys.ipsHint') }),
    ],
    submit: (values) => {
      const models = splitList(values.models);
      const ips = splitList(values.ips);
      return post('/api/me/tokens', {
        name: values.name.trim(),
        limit_micros: values.limit.trim() ? dollarsToMicros(values.limit) : null,
        budget_period: values.budget_period || null,
        models: models.length ? models : null,
        expires_at: localToIso(values.expires),
        allowed_ips: ips.length ? ips : null,
      });
    },
  });
  if (!created) return;
  await refresh();
  showOnce(created, navigate);
}

/** Your own limit and its period; a limit an administrator set (admin_limits) applies as well. */
function editLimit(row, refresh) {
  return formDialog({
    title: t('budget.editTitle', { name: row.name }),
    fields: [
      field({
        name: 'limit',
        label: t('keys.limit'),
        inputmode: 'decimal',
        value: microsToDollars(row.limit_micros),
        hint: t('keys.limitHint'),
      }),
      periodField(row.budget_period, t('budget.keyHint')),
    ],
    submit: async (values) => {
      await patch(`/api/me/tokens/${row.id}`, {
        limit_micros: values.limit.trim() ? dollarsToMicros(values.limit) : null,
        budget_period: values.budget_period || null,
      });
      await refresh();
    },
  });
}

function showOnce(created, navigate) {
  const dialog = openDialog(
    t('keys.createdTitle'),
    h(
      'div',
      {},
      h('p', { class: 'warning' }, t('keys.shownOnce')),
      secretBox(created.key, t('keys.newKey', { name: created.name })),
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
  );
}
