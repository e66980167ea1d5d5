// Forgot password (#/forgot): a reset link by mail. The answer is the same whether the address has an account.
import { post } from '../api.js';
import { t } from '../i18n.js';
import { field } from '../ui.js';
import { note, visitorCard, visitorForm } from './visitor.js';

export function render({ languageSwitch }) {
  const form = visitorForm({
    submitLabel: t('forgot.submit'),
    fields: field({
      name: 'email',
      label: t('signup.email'),
      type: 'email',
      autocomplete: 'email',
      required: true,
      autofocus: true,
    }),
    submit: async ({ email }) => {
      await post('/api/auth/password/forgot', { email });
      return note(t('forgot.sent'));
    },
  });
  return visitorCard({
    languageSwitch,
    title: t('forgot.title'),
    content: [form, note('', ['#/', t('signup.toSignIn')])],
  });
}
