// Sign-in: the landing page while signed out. The session is an HttpOnly cookie set by the API.
// With two-factor sign-in on, the password earns a short-lived ticket, and a second step trades
// the ticket and a code (or a recovery code, or a passkey) for the session.
import { get, post } from '../api.js';
import { t } from '../i18n.js';
import { passkeysSupported, usePasskey } from '../passkey.js';
import { errorInHash, errorText, signInButtons } from '../sso.js';
import { button, field, h, readForm } from '../ui.js';
import { note, visitorCard } from './visitor.js';

export function render({ languageSwitch, onSignedIn }) {
  const ssoError = errorInHash();
  const sso = h('div');
  signInButtons().then((buttons) => buttons && sso.replaceChildren(buttons));
  const help = h('div', {}, h('p', { class: 'muted small' }, t('login.help')));
  // What else a visitor may do depends on the server's sign-up settings; the form works without them.
  get('/api/auth/signup')
    .then((options) => {
      const links = [];
      if (options.mode !== 'closed') links.push(['#/signup', t('signup.link')]);
      if (options.password_reset) links.push(['#/forgot', t('forgot.link')]);
      help.replaceChildren(note(options.mode === 'closed' ? t('login.help') : '', ...links));
    })
    .catch(() => {});
  const step = h('div');
  const card = visitorCard({ languageSwitch, title: t('login.title'), content: step });
  const title = card.querySelector('#visitor-title');
  const showPasswordStep = () => {
    title.textContent = t('login.title');
    const password = passwordStep(async (answer) => {
      if (answer.second_factor) {
        title.textContent = t('twofa.signInTitle');
        step.replaceChildren(h('div', {}, secondStep(answer.second_factor, onSignedIn, showPasswordStep)));
        step.querySelector('input')?.focus();
      } else await onSignedIn();
    });
    if (ssoError) password.showError(errorText(ssoError));
    step.replaceChildren(password.form, sso, help);
  };
  showPasswordStep();
  return card;
}

/** A sign-in step: `send(values)` makes the request, `done` gets its answer, failures show in the form. */
function stepForm(children, submitLabel, send, done, wrongText) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary wide' }, submitLabel);
  const form = h('form', { class: 'form', 'aria-labelledby': 'visitor-title' }, children, error, submit);
  const showError = (...content) => {
    error.replaceChildren(...content);
    error.hidden = false;
  };
  const fail = (failure, wrong) => {
    if (failure.code === 'email_unverified')
      showError(t('login.unverified'), ' ', h('a', { href: '#/verify' }, t('verify.resendTitle')));
    else showError(failure.status === 401 ? wrong : failure.message);
  };
  const run = async (action, wrong = wrongText) => {
    submit.disabled = true;
    error.hidden = true;
    try {
      await done(await action());
    } catch (failure) {
      fail(failure, wrong);
    } finally {
      submit.disabled = false;
    }
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    run(() => send(readForm(form)));
  });
  return { form, run, showError };
}

function passwordStep(done) {
  return stepForm(
    [
      field({ name: 'name', label: t('login.name'), autocomplete: 'username', required: true, autofocus: true }),
      field({
        name: 'password',
        label: t('login.password'),
        type: 'password',
        autocomplete: 'current-password',
        required: true,
      }),
    ],
    t('login.submit'),
    (values) => post('/api/auth/login', values),
    done,
    t('login.wrong'),
  );
}

function secondStep({ ticket, methods }, onSignedIn, startOver) {
  let recovery = !methods.includes('totp');
  const codeField = h('div');
  const showField = () =>
    codeField.replaceChildren(
      recovery
        ? field({ name: 'recovery_code', label: t('twofa.recoveryCode'), autocomplete: 'off', required: true })
        : field({
            name: 'code',
            label: t('twofa.code'),
            autocomplete: 'one-time-code',
            inputmode: 'numeric',
            pattern: '[0-9]{6}',
            maxlength: 6,
            required: true,
          }),
    );
  showField();
  const { form, run } = stepForm(
    codeField,
    t('twofa.verify'),
    (values) => post('/api/auth/second-factor', { ticket, ...values }),
    onSignedIn,
    t('twofa.wrongCode'),
  );
  const other = [];
  if (methods.includes('passkey') && passkeysSupported())
    other.push(
      button(
        t('twofa.usePasskey'),
        () =>
          run(async () => {
            const options = await post('/api/auth/second-factor/passkey-options', { ticket });
            return post('/api/auth/second-factor', { ticket, passkey: await usePasskey(options) });
          }, t('twofa.passkeyRefused')),
        { kind: 'wide' },
      ),
    );
  if (methods.includes('totp'))
    other.push(
      button(t('twofa.toggleRecovery'), () => {
        recovery = !recovery;
        showField();
        codeField.querySelector('input').focus();
      }, { kind: 'quiet' }),
    );
  other.push(button(t('twofa.startOver'), startOver, { kind: 'quiet' }));
  return [h('p', { class: 'muted small' }, t('twofa.signInHelp')), form, h('div', { class: 'login-more' }, other)];
}
