// Users: list, create, edit (role, group, enabled, limits, a spend cap per period, password), top up or
// adjust the balance (through the ledger), delete.
import { get, patch, post } from '../../api.js';
import { periodField, periodSummary } from '../../budget.js';
import { dateTime, dollarsToMicros, microsToDollars, money, optionalInt } from '../../format.js';
import { t } from '../../i18n.js';
import { resetTwoFactorButton } from '../twofactor.js';
import { badge, button, deleteButton, field, formDialog, h, loading, pageHeader, pager, table, toast } from '../../ui.js';

const PAGE = 100;

export async function render(page) {
  const list = h('div');
  let offset = 0;
  const groups = h('datalist', { id: 'group-names' });
  const refresh = () =>
    loading(list, async () => {
      const [{ data }, { data: groupRows }] = await Promise.all([
        get('/api/users', { limit: PAGE, offset }),
        get('/api/groups'),
      ]);
      groups.replaceChildren(...groupRows.map((g) => h('option', { value: g.name })));
      return h(
        'div',
        {},
        userTable(data, refresh),
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
      t('nav.admin/users'),
      button(t('users.create'), () => create(refresh), { kind: 'primary' }),
    ),
    groups,
    list,
  );
  await refresh();
}

function userTable(rows, refresh) {
  return table(
    [
      { label: 'ID', class: 'num', value: (row) => row.id },
      { label: t('users.name'), value: (row) => h('strong', {}, row.name) },
      {
        label: t('users.role'),
        value: (row) => (row.role === 'admin' ? badge(t('role.admin'), 'busy') : t('role.user')),
      },
      { label: t('users.group'), value: (row) => row.group },
      {
        label: t('users.balance'),
        class: 'num',
        value: (row) => (row.unlimited ? t('common.unlimited') : money(row.balance_micros)),
      },
      {
        label: t('common.status'),
        value: (row) => (row.enabled ? badge(t('common.enabled'), 'ok') : badge(t('common.disabled'), 'off')),
      },
      {
        label: t('users.limits'),
        value: (row) =>
          [row.rpm_limit && `${row.rpm_limit} rpm`, row.tpm_limit && `${row.tpm_limit} tpm`]
            .filter(Boolean)
            .join(' · ') || '—',
      },
      { label: t('budget.column'), value: (row) => periodSummary(row.period_budget) ?? '—' },
      { label: t('users.created'), value: (row) => dateTime(row.created_at) },
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) => [
          button(t('users.money'), () => moveMoney(row, refresh), { 'aria-label': `${t('users.money')} ${row.name}` }),
          button(t('common.edit'), () => edit(row, refresh), { 'aria-label': `${t('common.edit')} ${row.name}` }),
          h('a', { class: 'button', href: `#/admin/logs?user_id=${row.id}` }, t('users.logs')),
          resetTwoFactorButton(row),
          deleteButton(t('users.confirmDelete', { name: row.name }), `/api/users/${row.id}`, refresh),
        ],
      },
    ],
    rows,
    { empty: t('users.none'), label: t('nav.admin/users') },
  );
}

function roleField(value) {
  return field({
    name: 'role',
    label: t('users.role'),
    type: 'select',
    value,
    options: [
      ['user', t('role.user')],
      ['admin', t('role.admin')],
    ],
  });
}

function limitFields(row) {
  return h(
    'div',
    { class: 'row' },
    field({
      name: 'rpm_limit',
      label: t('users.rpm'),
      type: 'number',
      min: 1,
      step: 1,
      value: row.rpm_limit ?? '',
      hint: t('users.limitHint'),
    }),
    field({
      name: 'tpm_limit',
      label: t('users.tpm'),
      type: 'number',
      min: 1,
      step: 1,
      value: row.tpm_limit ?? '',
      hint: t('users.limitHint'),
    }),
  );
}

function budgetFields(row) {
  return h(
    'div',
    { class: 'row' },
    field({
      name: 'budget',
      label: t('budget.cap'),
      inputmode: 'decimal',
      value: microsToDollars(row.budget_micros),
      hint: t('budget.capHint'),
    }),
    periodField(row.budget_period),
  );
}

/** The cap's two fields as the API takes them: both null when no amount is given. */
function budgetBody(values) {
  const amount = values.budget.trim();
  return {
    budget_micros: amount ? dollarsToMicros(amount) : null,
    budget_period: amount ? values.budget_period || 'monthly' : null,
  };
}

function create(refresh) {
  return formDialog({
    title: t('users.create'),
    submitLabel: t('common.create'),
    fields: [
      field({ name: 'name', label: t('users.name'), required: true, autocomplete: 'off' }),
      field({
        name: 'password',
        label: t('users.password'),
        type: 'password',
        minlength: 8,
        autocomplete: 'new-password',
        hint: t('users.passwordHint'),
      }),
      h(
        'div',
        { class: 'row' },
        roleField('user'),
        field({ name: 'group', label: t('users.group'), value: 'default', list: 'group-names', required: true }),
      ),
      field({ name: 'balance', label: t('users.initialBalance'), inputmode: 'decimal', value: '0' }),
      limitFields({}),
      budgetFields({}),
      field({ name: 'unlimited', label: t('users.unlimited'), type: 'checkbox', value: false }),
    ],
    submit: async (values) => {
      const body = {
        name: values.name.trim(),
        role: values.role,
        group: values.group.trim(),
        unlimited: values.unlimited,
        balance_micros: dollarsToMicros(values.balance || '0'),
        rpm_limit: optionalInt(values.rpm_limit, t('users.rpm')),
        tpm_limit: optionalInt(values.tpm_limit, t('users.tpm')),
        ...budgetBody(values),
      };
      if (values.password) body.password = values.password;
      await post('/api/users', body);
      await refresh();
    },
  });
}

function edit(row, refresh) {
  return formDialog({
    title: t('users.editTitle', { name: row.name }),
    fields: [
      field({ name: 'name', label: t('users.name'), value: row.name, required: true }),
      h(
        'div',
        { class: 'row' },
        roleField(row.role),
        field({ name: 'group', label: t('users.group'), value: row.group, list: 'group-names', required: true }),
      ),
      limitFields(row),
      budgetFields(row),
      field({
        name: 'password',
        label: t('users.newPassword'),
        type: 'password',
        minlength: 8,
        autocomplete: 'new-password',
        hint: t('users.newPasswordHint'),
      }),
      field({ name: 'enabled', label: t('common.enabled'), type: 'checkbox', value: row.enabled }),
      field({ name: 'unlimited', label: t('users.unlimited'), type: 'checkbox', value: row.unlimited }),
    ],
    submit: async (values) => {
      const body = {
        name: values.name.trim(),
        role: values.role,
        group: values.group.trim(),
        enabled: values.enabled,
        unlimited: values.unlimited,
        rpm_limit: optionalInt(values.rpm_limit, t('users.rpm')),
        tpm_limit: optionalInt(values.tpm_limit, t('users.tpm')),
        ...budgetBody(values),
      };
      if (values.password) body.password = values.password;
      await patch(`/api/users/${row.id}`, body);
      await refresh();
    },
  });
}

/** Top up (a positive credit) or adjust (a signed correction); both are ledger entries. */
function moveMoney(row, refresh) {
  return formDialog({
    title: t('users.moneyTitle', { name: row.name, balance: money(row.balance_micros) }),
    submitLabel: t('users.apply'),
    fields: [
      field({
        name: 'kind',
        label: t('users.kind'),
        type: 'select',
        value: 'topup',
        options: [
          ['topup', t('users.topup')],
          ['adjust', t('users.adjust')],
        ],
      }),
      field({
        name: 'amount',
        label: t('users.amount'),
        required: true,
        inputmode: 'decimal',
        hint: t('users.amountHint'),
      }),
      field({ name: 'note', label: t('users.note') }),
    ],
    submit: async (values) => {
      const amount = dollarsToMicros(values.amount, { allowNegative: values.kind === 'adjust' });
      const result = await post(`/api/users/${row.id}/${values.kind}`, { amount_micros: amount, note: values.note });
      toast(t('users.moneyDone', { name: row.name, balance: money(result.user.balance_micros) }));
      await refresh();
    },
  });
}
