// The verification link's landing page (#/verify?token=...), and a new link for whoever lost theirs (#/verify).
import { post } from '../api.js';
import { t } from '../i18n.js';
import { field, h } from '../ui.js';
import { note, visitorCard, visitorForm } from './visitor.js';

function resendForm() {
  return visitorForm({
    submitLabel: t('verify.resend'),
    fields: field({ name: 'email', label: t('signup.email'), type: 'email', autocomplete: 'email', required: true }),
    submit: async ({ email }) => {
      await post('/api/auth/verify/resend', { email });
      return note(t('verify.resent'), ['#/', t('signup.toSignIn')]);
    },
  });
}

export async function render({ languageSwitch, params }) {
  const token = params.get('token');
  if (!token) return visitorCard({ languageSwitch, title: t('verify.resendTitle'), content: resendForm() });
  try {
    await post('/api/auth/verify', { token });
    return visitorCard({
      languageSwitch,
      title: t('verify.title'),
      content: note(t('verify.done'), ['#/', t('signup.toSignIn')]),
    });
  } catch (error) {
    const reason = error.code === 'invalid_token' ? t('verify.invalid') : error.message;
    return visitorCard({
      languageSwitch,
      title: t('verify.title'),
      content: [h('p', { class: 'form-error', role: 'alert' }, reason), resendForm()],
    });
  }
}
