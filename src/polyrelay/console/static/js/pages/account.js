// Account: who you are, your budget per period if capped, your password, two-factor sign-in, your
// invitations, your single sign-on identities, signing out.
import { post } from '../api.js';
import { periodSummary } from '../budget.js';
import { dateTime, money } from '../format.js';
import { t } from '../i18n.js';
import { button, facts, field, h, newPasswordFields, pageHeader, readForm } from '../ui.js';
import { identitiesSection } from '../sso.js';
import { inviteSection } from './invite.js';
import { twoFactorCard } from './twofactor.js';

export async function render(page, { me, params, signOut, refreshMe }) {
  const result = h('p', { role: 'status' });
  const form = h(
    'form',
    { class: 'form narrow', 'aria-labelledby': 'password-title' },
    h('h2', { id: 'password-title' }, t('account.changePassword')),
    field({
      name: 'current_password',
      label: t('account.current'),
      type: 'password',
      autocomplete: 'current-password',
      required: true,
    }),
    ...newPasswordFields({ name: 'new_password', label: t('account.new'), confirmLabel: t('account.confirm') }),
    h('button', { type: 'submit', class: 'primary' }, t('account.save')),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = readForm(form);
    result.className = 'form-error';
    if (values.new_password !== values.confirm) {
      result.textContent = t('account.mismatch');
      return;
    }
    try {
      await post('/api/me/password', { current_password: values.current_password, new_password: values.new_password });
      result.textContent = t('account.changed');
      result.className = 'success';
      form.reset();
    } catch (error) {
      result.textContent = error.code === 'wrong_password' ? t('account.wrongPassword') : error.message;
    }
  });
  page.append(
    pageHeader(t('nav.account'), button(t('nav.signOut'), signOut)),
    facts([
      [t('account.name'), me.name],
      [t('account.role'), t(`role.${me.role}`)],
      [t('account.group'), me.group],
      [t('account.balance'), me.unlimited ? t('common.unlimited') : money(me.available_micros ?? me.balance_micros)],
      // A cap an administrator set on what you spend per period: this period's spend and its next reset.
      ...(me.period_budget ? [[t('budget.column'), periodSummary(me.period_budget)]] : []),
      [t('account.since'), dateTime(me.created_at)],
    ]),
    form,
    twoFactorCard({ refreshMe }),
    inviteSection({ refreshMe }),
    await identitiesSection(params),
  );
}
