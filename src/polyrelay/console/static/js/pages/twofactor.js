// The account page's two-factor card: TOTP (enrol with a QR code, confirm, turn off), passkeys (add,
// list, remove) and recovery codes (shown once, renewed). Secrets appear only in the answer that made them.
import { del, get, post } from '../api.js';
import { dateTime } from '../format.js';
import { t } from '../i18n.js';
import { createPasskey, passkeysSupported } from '../passkey.js';
import { attempt, badge, button, confirmDialog, field, h, readForm, secretBox, table, toast } from '../ui.js';

export function twoFactorCard({ refreshMe }) {
  const section = h('section', { class: 'twofa', 'aria-labelledby': 'twofa-title' });
  const refresh = async (shown = null) => {
    const status = await get('/api/me/2fa');
    await refreshMe();
    const parts = [
      h('h2', { id: 'twofa-title' }, t('twofa.title')),
      status.enrolment_required ? h('p', { class: 'warning', role: 'alert' }, t('twofa.required')) : null,
      shown,
      totpPart(status, refresh),
      passkeyPart(status, refresh),
      recoveryPart(status, refresh),
    ];
    section.replaceChildren(...parts.flat().filter(Boolean));
  };
  attempt(() => refresh());
  return section;
}

/** The recovery codes, once: they are stored hashed and never shown again. */
function recoveryCodes(codes) {
  if (!codes?.length) return null;
  return h(
    'div',
    { class: 'recovery-codes' },
    h('p', { class: 'warning' }, t('twofa.saveCodes')),
    secretBox(codes.join('\n'), t('twofa.recoveryCodes')),
  );
}

function totpPart(status, refresh) {
  if (status.totp) {
    return [
      h('p', {}, badge(t('twofa.totpOn'), 'ok')),
      codeForm({
        label: t('twofa.proof'),
        submitLabel: t('twofa.disable'),
        send: (values) => post('/api/me/2fa/totp/disable', proofOf(values.proof)),
        done: () => refresh(),
      }),
    ];
  }
  return [
    h('p', {}, badge(t('twofa.totpOff')), ' ', t('twofa.totpHelp')),
    button(t('twofa.enrol'), () => attempt(async () => enrol(await post('/api/me/2fa/totp'), refresh)), {
      kind: 'primary',
      'data-action': 'enrol-totp',
    }),
  ];
}

function recoveryPart(status, refresh) {
  if (!status.totp && !status.passkeys.length) return null;
  return [
    h('h3', {}, t('twofa.recoveryCodes')),
    h('p', {}, t('twofa.codesLeft', { count: status.recovery_codes_left })),
    codeForm({
      label: t('twofa.proof'),
      submitLabel: t('twofa.renew'),
      send: (values) => post('/api/me/2fa/recovery-codes', proofOf(values.proof)),
      done: (answer) => refresh(recoveryCodes(answer.recovery_codes)),
    }),
  ];
}

/** A six-digit code is a TOTP code; anything else is taken for a recovery code. */
const proofOf = (text) => (/^\s*\d{6}\s*$/.test(text) ? { code: text.trim() } : { recovery_code: text.trim() });

function codeForm({ label, submitLabel, send, done, numeric = false }) {
  const result = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h(
    'form',
    { class: 'form narrow' },
    field({
      name: 'proof',
      label,
      autocomplete: 'one-time-code',
      inputmode: numeric ? 'numeric' : null,
      required: true,
      maxlength: 32,
    }),
    h('button', { type: 'submit' }, submitLabel),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.hidden = true;
    try {
      await done(await send(readForm(form)));
    } catch (error) {
      result.textContent = error.status === 401 ? t('twofa.wrongCode') : error.message;
      result.hidden = false;
    }
  });
  return form;
}

function enrol(enrolment, refresh) {
  const card = document.querySelector('.twofa');
  const steps = h(
    'div',
    { class: 'enrol' },
    h('p', {}, t('twofa.scan')),
    h('img', { class: 'qr', src: enrolment.qr_data_uri, alt: t('twofa.qrAlt'), width: 200, height: 200 }),
    secretBox(enrolment.secret, t('twofa.secret')),
    codeForm({
      label: t('twofa.code'),
      submitLabel: t('twofa.confirm'),
      numeric: true,
      send: (values) => post('/api/me/2fa/totp/confirm', { code: values.proof.trim() }),
      done: (answer) => refresh(recoveryCodes(answer.recovery_codes)),
    }),
  );
  card.querySelector('[data-action="enrol-totp"]').replaceWith(steps);
  steps.querySelector('input[name="proof"]').focus();
}

function passkeyPart(status, refresh) {
  const rows = table(
    [
      { label: t('twofa.passkeyName'), value: (row) => row.name },
      { label: t('twofa.added'), value: (row) => dateTime(row.created_at) },
      { label: t('twofa.lastUsed'), value: (row) => (row.last_used_at ? dateTime(row.last_used_at) : '—') },
      {
        label: t('common.actions'),
        value: (row) =>
          button(t('common.delete'), async () => {
            if (await confirmDialog(t('twofa.removePasskey', { name: row.name })))
              await attempt(async () => {
                await del(`/api/me/2fa/passkeys/${row.id}`);
                await refresh();
              });
          }, { kind: 'danger' }),
      },
    ],
    status.passkeys,
    { empty: t('twofa.noPasskeys'), label: t('twofa.passkeys') },
  );
  const heading = h('h3', {}, t('twofa.passkeys'));
  if (!status.passkeys_available) return [heading, h('p', { class: 'muted' }, t('twofa.passkeysOff'))];
  if (!passkeysSupported()) return [heading, rows, h('p', { class: 'muted' }, t('twofa.passkeysUnsupported'))];
  const form = h(
    'form',
    { class: 'form narrow' },
    field({ name: 'name', label: t('twofa.passkeyName'), required: true, maxlength: 64, value: t('twofa.defaultName') }),
    h('button', { type: 'submit' }, t('twofa.addPasskey')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    attempt(async () => {
      const options = await post('/api/me/2fa/passkeys/options');
      const credential = await createPasskey(options);
      const answer = await post('/api/me/2fa/passkeys', { name: readForm(form).name, credential });
      await refresh(recoveryCodes(answer.recovery_codes));
    });
  });
  return [heading, rows, form];
}

/** The admin's Users page: remove a user's second factors (a lost phone), after a confirmation. */
export function resetTwoFactorButton(user) {
  const label = t('twofa.reset');
  return button(
    label,
    async () => {
      if (!(await confirmDialog(t('twofa.confirmReset', { name: user.name }), label))) return;
      await attempt(async () => {
        await del(`/api/users/${user.id}/2fa`);
        toast(t('twofa.wasReset', { name: user.name }));
      });
    },
    { 'aria-label': `${label} ${user.name}` },
  );
}
