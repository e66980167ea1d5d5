// Usage logs: filters, paging, rows that expand to every field, CSV export with the same filters.
// The admin page shows everyone's logs with the same view (`logsView({admin: true})`).
import { get, withQuery } from '../api.js';
import { dateTime, localToIso, millis, money, number } from '../format.js';
import { t } from '../i18n.js';
import { badge, facts, field, h, loading, pageHeader, pager, readForm, table } from '../ui.js';

const PAGE = 50;
const MONEY_FIELDS = new Set(['cost_micros']);
const TIME_FIELDS = new Set(['created_at']);
const MILLIS_FIELDS = new Set(['latency_ms', 'ttfb_ms']);

export async function render(page, context) {
  await logsView(page, { ...context, admin: false });
}

export async function logsView(page, { admin, params }) {
  const base = admin ? '/api/logs' : '/api/me/logs';
  const tokens = admin ? [] : (await get('/api/me/tokens')).data;
  const users = admin ? (await get('/api/users', { limit: 1000 })).data : [];
  const filters = h(
    'form',
    { class: 'filters', 'aria-label': t('logs.filters') },
    field({ name: 'start', label: t('logs.from'), type: 'datetime-local' }),
    field({ name: 'end', label: t('logs.to'), type: 'datetime-local' }),
    field({ name: 'model', label: t('logs.model'), value: params.get('model') ?? '' }),
    field({
      name: 'status',
      label: t('logs.status'),
      list: 'log-statuses',
      value: params.get('status') ?? '',
      hint: t('logs.statusHint'),
    }),
    h(
      'datalist',
      { id: 'log-statuses' },
      ['ok', 'error', '429'].map((value) => h('option', { value })),
    ),
    admin
      ? field({
          name: 'user_id',
          label: t('logs.user'),
          type: 'select',
          value: params.get('user_id') ?? '',
          options: [['', t('logs.anyUser')], ...users.map((u) => [String(u.id), u.name])],
        })
      : field({
          name: 'token_id',
          label: t('logs.key'),
          type: 'select',
          value: '',
          options: [['', t('logs.anyKey')], ...tokens.map((k) => [String(k.id), k.name])],
        }),
    h(
      'div',
      { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary' }, t('logs.apply')),
      h('a', { class: 'button', href: base + '/export.csv', download: 'usage.csv' }, t('logs.exportCsv')),
    ),
  );
  const results = h('div');
  const exportLink = filters.querySelector('a.button');
  let offset = 0;

  const query = () => {
    const values = readForm(filters);
    return { ...values, start: localToIso(values.start), end: localToIso(values.end) };
  };
  const show = () =>
    loading(results, async () => {
      exportLink.href = withQuery(`${base}/export.csv`, query());
      const [data, totals] = await Promise.all([
        get(base, { ...query(), limit: PAGE, offset }),
        get(`${base}/aggregate`, query()),
      ]);
      return h(
        'div',
        {},
        totalsBar(totals.data),
        logTable(data.data, admin ? new Map(users.map((u) => [u.id, u.name])) : null),
        pager({
          offset,
          limit: PAGE,
          count: data.data.length,
          total: data.total,
          onPage: (next) => {
            offset = next;
            show();
          },
        }),
      );
    });
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    offset = 0;
    show();
  });
  page.append(pageHeader(admin ? t('nav.admin/logs') : t('nav.logs')), filters, results);
  await show();
}

/** `userNames` (id → name) only for the admin view, which shows whose row it is and the channel. */
function logTable(rows, userNames) {
  const admin = userNames !== null;
  return table(
    [
      { label: t('logs.time'), value: (row) => dateTime(row.created_at) },
      admin ? { label: t('logs.user'), value: (row) => userNames.get(row.user_id) ?? row.user_id ?? '—' } : null,
      { label: t('logs.key'), value: (row) => row.token_name || '—' },
      { label: t('logs.model'), value: (row) => h('code', {}, row.model || '—') },
      admin ? { label: t('logs.channel'), value: (row) => row.channel_name || '—' } : null,
      {
        label: t('logs.status'),
        value: (row) => badge(String(row.status_code), row.status_code < 400 ? 'ok' : 'error'),
      },
      {
        label: t('logs.tokens'),
        class: 'num',
        value: (row) => `${number(row.prompt_tokens)} / ${number(row.completion_tokens)}`,
      },
      { label: t('logs.cost'), class: 'num', value: (row) => money(row.cost_micros) },
      { label: t('logs.latency'), class: 'num', value: (row) => millis(row.latency_ms) },
    ].filter(Boolean),
    rows,
    { empty: t('logs.none'), details, label: t('nav.logs') },
  );
}

/** The filtered rows' totals (all pages), from the aggregate API: requests, errors, tokens, cost. */
function totalsBar(groups) {
  const sum = (name) => groups.reduce((total, group) => total + group[name], 0);
  const item = (label, value) => h('div', {}, h('span', { class: 'muted' }, label), ' ', h('strong', {}, value));
  return h(
    'section',
    { class: 'totals', 'aria-label': t('logs.totals') },
    item(t('dashboard.requests'), number(sum('requests'))),
    item(t('logs.errors'), number(sum('errors'))),
    item(t('logs.tokens'), `${number(sum('prompt_tokens'))} / ${number(sum('completion_tokens'))}`),
    item(t('logs.cost'), money(sum('cost_micros'))),
  );
}

/** Every field of a log row, labelled in the reader's language, money, times and durations made readable. */
function details(row) {
  return facts(
    Object.entries(row).map(([name, value]) => {
      let shown = value;
      if (value === null || value === '') shown = '—';
      else if (MONEY_FIELDS.has(name)) shown = money(value);
      else if (TIME_FIELDS.has(name)) shown = dateTime(value);
      else if (MILLIS_FIELDS.has(name)) shown = millis(value);
      else if (typeof value === 'boolean') shown = value ? t('health.yes') : t('health.no');
      else if (typeof value === 'number') shown = Number.isInteger(value) ? number(value) : number(Math.round(value * 1000) / 1000);
      return [fieldLabel(name), h('span', { class: 'mono' }, String(shown))];
    }),
  );
}

/** "logField.<name>" when the language has it, else the name with spaces ("cache_write_tokens" → "Cache write tokens"). */
function fieldLabel(name) {
  const key = `logField.${name}`;
  const label = t(key);
  if (label !== key) return label;
  const words = name.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}
