// Periodic budgets (a key's limit or a user's cap that resets daily, weekly or monthly, UTC):
// the period picker of the key and user dialogs, and the one-line summary the tables show.
import { dateTime, money } from './format.js';
import { t } from './i18n.js';
import { field } from './ui.js';

/** A select of the period a limit resets after; '' means it never resets. */
export function periodField(value, hint) {
  return field({
    name: 'budget_period',
    label: t('budget.period'),
    type: 'select',
    value: value ?? '',
    hint,
    options: [
      ['', t('budget.never')],
      ['daily', t('budget.daily')],
      ['weekly', t('budget.weekly')],
      ['monthly', t('budget.monthly')],
    ],
  });
}

/** "$1.20 of $5.00 today · resets 02/12/2026, 00:00" for an API `period_budget`, else null. */
export function periodSummary(budget) {
  if (!budget) return null;
  return t('budget.summary', {
    spent: money(budget.spent_micros),
    limit: money(budget.limit_micros),
    period: t(`budget.this.${budget.period}`),
    reset: dateTime(budget.resets_at),
  });
}
