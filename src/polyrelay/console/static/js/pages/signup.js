// Sign-up (#/signup, #/signup?invite=CODE): a new account, then the verification mail.
import { get, post } from '../api.js';
import { t } from '../i18n.js';
import { field, h, newPasswordFields } from '../ui.js';
import { note, visitorCard, visitorForm } from './visitor.js';

export async function render({ languageSwitch, params }) {
  const invite = params.get('invite') ?? '';
  const options = await get('/api/auth/signup', { invite });
  const title = t('signup.title');
  if (options.mode === 'closed')
    return visitorCard({ languageSwitch, title, content: note(t('signup.closed'), ['#/', t('signup.toSignIn')]) });
  const domains = options.allowed_domains.length
    ? t('signup.domains', { domains: options.allowed_domains.join(', ') })
    : '';
  const form = visitorForm({
    submitLabel: t('signup.submit'),
    fields: [
      field({ name: 'name', label: t('login.name'), autocomplete: 'username', required: true, autofocus: true }),
      field({
        name: 'email',
        label: t('signup.email'),
        type: 'email',
        autocomplete: 'email',
        required: true,
        hint: domains || null,
      }),
      ...newPasswordFields({ name: 'password', label: t('login.password'), confirmLabel: t('signup.confirm') }),
      field({
        name: 'invite_code',
        label: t('signup.invite'),
        value: invite,
        required: options.mode === 'invite-only',
        autocomplete: 'off',
        spellcheck: 'false',
      }),
    ],
    submit: async ({ name, email, password, confirm, invite_code: code }) => {
      if (password !== confirm) throw new Error(t('account.mismatch'));
      const created = await post('/api/auth/signup', { name, email, password, invite_code: code || null });
      return note(created.verification_sent ? t('signup.checkMail', { email }) : t('signup.done'));
    },
  });
  const badInvite = options.invite_valid === false ? h('p', { class: 'form-error' }, t('signup.badInvite')) : null;
  return visitorCard({ languageSwitch, title, content: [badInvite, form, note('', ['#/', t('signup.toSignIn')])] });
}
