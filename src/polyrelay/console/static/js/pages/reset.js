// The reset link's landing page (#/reset?token=...): a new password; every session of the account ends.
import { post } from '../api.js';
import { t } from '../i18n.js';
import { h, newPasswordFields } from '../ui.js';
import { note, visitorCard, visitorForm } from './visitor.js';

export function render({ languageSwitch, params }) {
  const token = params.get('token') ?? '';
  const form = visitorForm({
    submitLabel: t('reset.submit'),
    fields: [
      ...newPasswordFields({
        name: 'password',
        label: t('account.new'),
        confirmLabel: t('account.confirm'),
        autofocus: true,
      }),
    ],
    submit: async ({ password, confirm }) => {
      if (password !== confirm) throw new Error(t('account.mismatch'));
      await post('/api/auth/password/reset', { token, password });
      return note(t('reset.done'), ['#/', t('signup.toSignIn')]);
    },
    failed: (error) =>
      error.code === 'invalid_token'
        ? [t('verify.invalid'), ' ', h('a', { href: '#/forgot' }, t('forgot.title'))]
        : error.message,
  });
  return visitorCard({ languageSwitch, title: t('reset.title'), content: form });
}
