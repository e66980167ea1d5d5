// Every user's top-up orders, filtered by status and user; "review" holds money that arrived but was
// not credited automatically (late, or not what was ordered): credit or dismiss it here (docs/platform.md).
import { get, post } from '../../api.js';
import { money } from '../../format.js';
import { t } from '../../i18n.js';
import { attempt, button, confirmDialog, field, h, loading, pageHeader, pager, readForm } from '../../ui.js';
import { orderTable, paid } from '../topup.js';

const PAGE = 100;
const STATUSES = ['pending', 'paid', 'expired', 'failed', 'review'];

export async function render(page, { params }) {
  const users = (await get('/api/users', { limit: 1000 })).data;
  const names = new Map(users.map((u) => [u.id, u.name]));
  const filters = h(
    'form',
    { class: 'filters', 'aria-label': t('orders.filters') },
    field({
      name: 'status',
      label: t('common.status'),
      type: 'select',
      value: params.get('status') ?? '',
      options: [['', t('orders.anyStatus')], ...STATUSES.map((s) => [s, t(`orders.status.${s}`)])],
    }),
    field({
      name: 'user_id',
      label: t('orders.user'),
      type: 'select',
      value: params.get('user_id') ?? '',
      options: [['', t('logs.anyUser')], ...users.map((u) => [String(u.id), u.name])],
    }),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'primary' }, t('logs.apply'))),
  );
  const results = h('div');
  let offset = 0;
  const show = () =>
    loading(results, async () => {
      const { data } = await get('/api/orders', { ...readForm(filters), limit: PAGE, offset });
      return h(
        'div',
        {},
        orderTable(data, {
          users: names,
          actions: (row) => decisions(row, names, show),
          label: t('nav.admin/orders'),
        }),
        pager({
          offset,
          limit: PAGE,
          count: data.length,
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
  page.append(pageHeader(t('nav.admin/orders')), filters, results);
  await show();
}

/** Credit or dismiss an order in review, after a confirmation that says what happens. */
function decisions(row, names, done) {
  if (row.status !== 'review') return null;
  const decide = (action, question) => async () => {
    if (!(await confirmDialog(question, t(`orders.action.${action}`)))) return;
    await attempt(async () => {
      await post(`/api/orders/${row.id}/resolve`, { action });
      await done();
    });
  };
  const who = names.get(row.user_id) ?? `#${row.user_id}`;
  const creditQuestion = t('orders.confirmCredit', { amount: money(row.credit_micros), user: who, paid: paid(row) });
  return [
    button(t('orders.action.credit'), decide('credit', creditQuestion), { kind: 'primary' }),
    button(t('orders.action.dismiss'), decide('dismiss', t('orders.confirmDismiss', { order: row.order_no })), {
      kind: 'danger',
    }),
  ];
}
