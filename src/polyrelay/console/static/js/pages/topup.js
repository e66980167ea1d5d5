// Top up by payment: pick a provider and an amount, see the credit (bonus included) before paying,
// go to the provider's page, come back to the order's status; the list of your orders below.
import { get, post } from '../api.js';
import { dateTime, money } from '../format.js';
import { t } from '../i18n.js';
import { badge, facts, field, h, loading, pageHeader, pager, readForm, table } from '../ui.js';

const PAGE = 20;
const STATUS_KINDS = { paid: 'ok', pending: 'busy', review: 'error', failed: 'error', expired: 'neutral' };

export function statusBadge(status) {
  return badge(t(`orders.status.${status}`), STATUS_KINDS[status] ?? 'neutral');
}

/** "100.00 CNY" */
export function paid(order) {
  return `${order.amount} ${order.currency.toUpperCase()}`;
}

/** The orders as a table whose rows expand to every detail; `users` (id → name) adds the user column for
 * administrators, `actions` a last column. */
export function orderTable(rows, { users = null, actions = null, label } = {}) {
  return table(
    [
      { label: t('orders.created'), value: (row) => dateTime(row.created_at) },
      users ? { label: t('orders.user'), value: (row) => users.get(row.user_id) ?? `#${row.user_id}` } : null,
      { label: t('orders.number'), value: (row) => h('code', { title: row.order_no }, `…${row.order_no.slice(-8)}`) },
      { label: t('orders.provider'), value: (row) => `${row.provider} · ${methodName(row.method)}` },
      { label: t('orders.amount'), class: 'num', value: paid },
      { label: t('orders.credit'), class: 'num', value: (row) => money(row.credit_micros) },
      { label: t('common.status'), value: (row) => statusBadge(row.status) },
      actions ? { label: t('common.actions'), class: 'row-actions', value: actions } : null,
    ].filter(Boolean),
    rows,
    {
      empty: t('orders.none'),
      label,
      details: (row) =>
        facts([
          [t('orders.number'), row.order_no], // plain text: a table cell's code never wraps
          [t('orders.providerRef'), row.provider_ref || '—'],
          [t('orders.bonus'), money(row.bonus_micros)],
          [t('orders.expires'), dateTime(row.expires_at)],
          [t('orders.paidAt'), dateTime(row.paid_at)],
          [t('orders.note'), row.note || '—'],
        ]),
    },
  );
}

function methodName(method) {
  const key = `topup.method.${method}`;
  const name = t(key);
  return name === key ? method : name;
}

/** What `amount` of `provider`'s currency credits: [credit, bonus] in micro-USD (the server's quote decides). */
function preview(options, provider, amount) {
  if (!/^\d+(\.\d{1,2})?$/.test(amount)) return null;
  const minor = Math.round(Number(amount) * 100);
  const base = Math.floor(minor * provider.rate * 10_000);
  const tier = options.bonus_tiers.filter((tier) => base >= tier.from * 1_000_000).pop();
  const bonus = tier ? Math.floor((base * tier.bonus_percent) / 100) : 0;
  return [base + bonus, bonus];
}

/** Send the browser to the provider: a page to open, or a form to post (Epay). */
function goPay(checkout) {
  if (checkout.redirect_url) {
    location.assign(checkout.redirect_url);
    return;
  }
  const { action, method, fields } = checkout.form;
  const form = h(
    'form',
    { action, method, hidden: true },
    Object.entries(fields).map(([name, value]) => h('input', { type: 'hidden', name, value })),
  );
  document.body.append(form);
  form.submit();
}

export async function render(page, { me, params }) {
  page.append(pageHeader(t('nav.topup')), facts([[t('redeem.balance'), money(me.available_micros ?? me.balance_micros)]]));
  const options = await get('/api/me/topup/options');
  const returned = params.get('order');
  const list = h('div');
  if (returned) page.append(h('div', { role: 'status', class: 'order-return' }));
  if (options.enabled) page.append(orderForm(options));
  else page.append(h('p', { class: 'empty' }, t('topup.disabled')));
  page.append(h('h2', {}, t('orders.mine')), list);
  let offset = 0;
  const refresh = () =>
    loading(list, async () => {
      const { data } = await get('/api/me/orders', { limit: PAGE, offset });
      const notice = page.querySelector('.order-return');
      const order = returned && data.find((o) => o.order_no === returned); // a fresh order is on the first page
      if (notice) notice.replaceChildren(returnNotice(order));
      return h(
        'div',
        {},
        orderTable(data, { label: t('orders.mine') }),
        pager({
          offset,
          limit: PAGE,
          count: data.length,
          onPage: (next) => {
            offset = next;
            refresh();
          },
        }),
      );
    });
  await refresh();
}

function returnNotice(order) {
  if (!order) return h('p', {}, t('topup.unknownOrder'));
  const text =
    order.status === 'paid'
      ? t('topup.returnedPaid', { amount: money(order.credit_micros) })
      : t('topup.returnedOther', { status: t(`orders.status.${order.status}`) });
  return h('p', { class: order.status === 'paid' ? 'success' : '' }, text);
}

function orderForm(options) {
  const choices = options.providers.flatMap((provider) =>
    provider.methods.map((method) => [
      `${provider.name}:${method}`,
      t('topup.choice', { method: methodName(method), currency: provider.currency.toUpperCase() }),
    ]),
  );
  const providerOf = (value) => options.providers.find((p) => p.name === value.split(':')[0]);
  const quoteLine = h('p', { class: 'quote', 'aria-live': 'polite' });
  const result = h('p', { role: 'alert' });
  const tiers = options.bonus_tiers.length
    ? h(
        'ul',
        { class: 'tiers' },
        options.bonus_tiers.map((tier) =>
          h('li', {}, t('topup.tier', { from: money(tier.from * 1_000_000), percent: tier.bonus_percent })),
        ),
      )
    : null;
  const form = h(
    'form',
    { class: 'form narrow' },
    field({ name: 'choice', label: t('topup.pay'), type: 'select', options: choices, value: choices[0][0] }),
    field({ name: 'amount', label: t('topup.amount'), required: true, inputmode: 'decimal', autocomplete: 'off' }),
    quoteLine,
    tiers,
    h('button', { type: 'submit', class: 'primary' }, t('topup.submit')),
    result,
  );
  const update = () => {
    const { choice, amount } = readForm(form);
    const provider = providerOf(choice);
    form.querySelector('label[for^="f-amount"]').textContent = t('topup.amountIn', {
      currency: provider.currency.toUpperCase(),
    });
    const credit = preview(options, provider, amount.trim());
    quoteLine.textContent = credit
      ? t(credit[1] ? 'topup.creditWithBonus' : 'topup.credit', { credit: money(credit[0]), bonus: money(credit[1]) })
      : t('topup.limits', { min: money(options.min_usd * 1_000_000), max: money(options.max_usd * 1_000_000) });
  };
  form.addEventListener('input', update);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.className = '';
    const { choice, amount } = readForm(form);
    const [provider, method] = choice.split(':');
    form.querySelector('button[type="submit"]').disabled = true;
    try {
      const { checkout } = await post('/api/me/orders', { provider, method, amount: amount.trim() });
      goPay(checkout);
    } catch (error) {
      result.textContent = error.message;
      result.className = 'form-error';
      form.querySelector('button[type="submit"]').disabled = false;
    }
  });
  update();
  return form;
}
