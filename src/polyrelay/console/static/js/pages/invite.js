// The account page's invitations section: your invite link, what inviting earns, and the affiliate
// balance with a button that moves it into your balance (GET /api/me/invite, POST /api/me/invite/move).
import { get, post } from '../api.js';
import { money, number, percent } from '../format.js';
import { t } from '../i18n.js';
import { attempt, button, facts, h, loading, secretBox, toast } from '../ui.js';

export function inviteSection({ refreshMe }) {
  const body = h('div');
  const section = h(
    'section',
    { class: 'invite', 'aria-labelledby': 'invite-title' },
    h('h2', { id: 'invite-title' }, t('invite.title')),
    body,
  );
  const refresh = () => loading(body, view);

  async function view() {
    const invite = await get('/api/me/invite');
    const rewards = [];
    if (invite.reward_fixed_micros)
      rewards.push(t('invite.rewardFixed', { amount: money(invite.reward_fixed_micros) }));
    if (invite.reward_share_of_first_topup)
      rewards.push(t('invite.rewardShare', { percent: percent(invite.reward_share_of_first_topup) }));
    const move = button(
      t('invite.move'),
      () =>
        attempt(async () => {
          const { moved_micros: moved } = await post('/api/me/invite/move');
          toast(t('invite.moved', { amount: money(moved) }));
          await refreshMe();
          await refresh();
        }),
      { kind: 'primary', disabled: invite.affiliate_micros <= 0 },
    );
    return h(
      'div',
      {},
      invite.enabled ? secretBox(invite.link, t('invite.link')) : h('p', { class: 'muted' }, t('invite.closed')),
      rewards.length ? h('p', { class: 'muted small' }, rewards.join(' ')) : null,
      facts([
        [t('invite.affiliate'), money(invite.affiliate_micros)],
        [t('invite.invitees'), number(invite.invitees)],
        [t('invite.rewarded'), `${number(invite.rewarded_invites)} / ${number(invite.max_rewarded_invites)}`],
      ]),
      move,
    );
  }

  refresh();
  return section;
}
