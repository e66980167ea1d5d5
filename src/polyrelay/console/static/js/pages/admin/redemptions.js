// Redemption codes: create a batch (the codes are shown once), list, delete unredeemed ones.
import { get, post } from '../../api.js';
import { dateTime, dollarsToMicros, localToIso, microsToDollars, money } from '../../format.js';
import { t } from '../../i18n.js';
import { badge, button, deleteButton, field, formDialog, h, loading, openDialog, pageHeader, pager, secretBox, table } from '../../ui.js';

const PAGE = 100;

export async function render(page) {
  const list = h('div');
  let offset = 0;
  const refresh = () =>
    loading(list, async () => {
      const { data } = await get('/api/redemptions', { limit: PAGE, offset });
      return h(
        'div',
        {},
        codeTable(data, refresh),
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
  page.append(
    pageHeader(
      t('nav.admin/redemptions'),
      button(t('codes.create'), () => create(refresh), { kind: 'primary' }),
    ),
    list,
  );
  await refresh();
}

function codeTable(rows, refresh) {
  return table(
    [
      { label: 'ID', class: 'num', value: (row) => row.id },
      { label: t('codes.name'), value: (row) => row.name || '—' },
      { label: t('codes.code'), value: (row) => h('code', {}, row.code_hint) },
      { label: t('codes.amount'), class: 'num', value: (row) => money(row.amount_micros) },
      {
        label: t('common.status'),
        value: (row) =>
          row.redeemed_by === null
            ? badge(t('codes.open'), 'ok')
            : [
                badge(t('codes.redeemed'), 'off'),
                h(
                  'div',
                  { class: 'muted small' },
                  t('codes.redeemedBy', { user: row.redeemed_by_name ?? `#${row.redeemed_by}`, time: dateTime(row.redeemed_at) }),
                ),
              ],
      },
      { label: t('codes.created'), value: (row) => dateTime(row.created_at) },
      { label: t('codes.expires'), value: (row) => (row.expires_at ? dateTime(row.expires_at) : t('keys.never')) },
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) =>
          row.redeemed_by !== null
            ? null
            : deleteButton(t('codes.confirmDelete', { hint: row.code_hint }), `/api/redemptions/${row.id}`, refresh),
      },
    ],
    rows,
    { empty: t('codes.none'), label: t('nav.admin/redemptions') },
  );
}

async function create(refresh) {
  const created = await formDialog({
    title: t('codes.create'),
    submitLabel: t('common.create'),
    fields: [
      h(
        'div',
        { class: 'row' },
        field({
          name: 'amount',
          label: t('codes.amount'),
          required: true,
          inputmode: 'decimal',
          hint: t('codes.amountHint'),
        }),
        field({
          name: 'count',
          label: t('codes.count'),
          type: 'number',
          min: 1,
          max: 1000,
          step: 1,
          value: 1,
          required: true,
        }),
      ),
      field({ name: 'name', label: t('codes.name'), maxlength: 128, hint: t('codes.nameHint') }),
      field({ name: 'expires', label: t('codes.expires'), type: 'datetime-local', hint: t('keys.expiresHint') }),
    ],
    submit: (values) =>
      post('/api/redemptions', {
        amount_micros: dollarsToMicros(values.amount),
        count: Number(values.count),
        name: values.name.trim(),
        expires_at: localToIso(values.expires),
      }),
  });
  if (!created) return;
  await refresh();
  const dialog = openDialog(
    t('codes.createdTitle'),
    h(
      'div',
      {},
      h('p', { class: 'warning' }, t('codes.shownOnce')),
      secretBox(created.data.map((code) => code.code).join('\n'), t('codes.newCodes', { count: created.data.length })),
      h(
        'footer',
        { class: 'dialog-actions' },
        csvLink(created.data),
        button(t('common.done'), () => dialog.close(), { kind: 'primary' }),
      ),
    ),
  );
}

/** A download of the new codes as CSV (code, amount in USD, expiry, label), made in the browser: they exist nowhere else. */
function csvLink(codes) {
  const quote = (value) => `"${String(value ?? '').replace(/"/g, '""')}"`;
  const lines = [
    ['code', 'amount_usd', 'expires_at', 'label'],
    ...codes.map((code) => [code.code, microsToDollars(code.amount_micros), code.expires_at ?? '', code.name]),
  ];
  const blob = new Blob([lines.map((line) => line.map(quote).join(',')).join('\r\n') + '\r\n'], { type: 'text/csv' });
  return h('a', { class: 'button', href: URL.createObjectURL(blob), download: 'redemption-codes.csv' }, t('codes.downloadCsv'));
}
