// Billing history: the user's ledger (charges, refunds, top-ups, adjustments, redeemed codes), newest first.
import { get } from '../api.js';
import { dateTime, money } from '../format.js';
import { t } from '../i18n.js';
import { badge, field, h, loading, pageHeader, pager, table } from '../ui.js';

const PAGE = 100;
const KINDS = ['charge', 'refund', 'topup', 'adjustment', 'redemption'];

export async function render(page) {
  const list = h('div');
  let offset = 0;
  const kind = field({
    name: 'kind',
    label: t('billing.kind'),
    type: 'select',
    value: '',
    options: [['', t('billing.allKinds')], ...KINDS.map((name) => [name, t(`billing.kind.${name}`)])],
  });
  const picker = kind.querySelector('select');
  const refresh = () =>
    loading(list, async () => {
      const { data } = await get('/api/me/ledger', { kind: picker.value, limit: PAGE, offset });
      return h(
        'div',
        {},
        ledgerTable(data),
        pager({ offset, limit: PAGE, count: data.length, onPage: (next) => ((offset = next), refresh()) }),
      );
    });
  picker.addEventListener('change', () => ((offset = 0), refresh()));
  page.append(pageHeader(t('nav.billing')), h('p', { class: 'muted' }, t('billing.intro')), h('div', { class: 'filters' }, kind), list);
  await refresh();
}

function ledgerTable(rows) {
  return table(
    [
      { label: t('logs.time'), value: (row) => dateTime(row.created_at) },
      { label: t('billing.kind'), class: 'keep', value: (row) => badge(t(`billing.kind.${row.kind}`), row.amount_micros < 0 ? 'off' : 'ok') },
      { label: t('billing.amount'), class: 'num keep', value: (row) => (row.amount_micros > 0 ? '+' : '') + money(row.amount_micros) },
      { label: t('billing.note'), value: (row) => row.note || '—' },
      { label: t('billing.request'), value: (row) => (row.request_id ? h('code', {}, row.request_id) : '—') },
    ],
    rows,
    { empty: t('billing.none'), label: t('nav.billing') },
  );
}
