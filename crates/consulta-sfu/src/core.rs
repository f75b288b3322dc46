//! The sans-IO session core: rooms, participants, tracks and subscriptions.
//!
//! Implements the server side of spec `matrixrtc-livekit.md` §2.4 (JoinResponse), §2.5 (v0 flow),
//! §2.7 (publishing), §2.8 (subscribing, ParticipantInfo rules), §2.11 (keep-alive, leave) and the
//! message set of §6; §5 items 1, 6 and 13 are handled here (server version, `encryption` copied
//! into TrackInfo, full track lists with increasing versions).
//!
//! In the style of str0m and quinn-proto: inputs are `handle_*` calls that carry `now`, outputs are
//! drained with [`Sfu::poll_output`], and [`Sfu::poll_timeout`] says when to call
//! [`Sfu::handle_timeout`] next. No sockets, no clock reads, no tasks. The media engine is reached
//! through the [`MediaEngine`] seam.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use livekit_protocol::{
    ClientConfiguration, JoinResponse, LeaveRequest, ParticipantInfo, ParticipantPermission,
    ParticipantUpdate, Pong, ReconnectResponse, Room as RoomInfo, ServerInfo, SignalRequest,
    SignalResponse, SignalTarget, SimulcastCodecInfo, TrackInfo, TrackPublishedResponse,
    TrackSource, TrackType, TrackUnpublishedResponse, participant_info, signal_request,
    signal_response,
};

use crate::auth::{ApiKeys, JoinGrant};
use crate::dynacast::{self, Dynacast};
use crate::forward::{Codec, Quality};
use crate::ids::{ConnId, ParticipantSid, RoomName, SidGen, TrackSid};
use crate::media::{MediaEngine, MediaEvent, TrackSettings};
use crate::permission::SubscribePermission;
use crate::signal::RateLimiter;
pub use livekit_protocol::leave_request::Action as LeaveAction;

/// The server version advertised in `server_info.version` and `server_version`; without one,
/// livekit-client refuses the server (§5 item 1), and RPC wants ≥ 1.8.0.
pub const SERVER_VERSION: &str = "1.9.0";

/// The first client protocol version that reads a `leave`'s action (RESUME, RECONNECT,
/// DISCONNECT); older ones read only `can_reconnect`, as "join again".
const LEAVE_ACTIONS_SINCE: i32 = 13;

/// The signalling protocol version the server speaks.
pub const PROTOCOL_VERSION: i32 = 16;

/// Why a join was refused. Nothing was created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// The room does not exist and the token may not create it. The message is the exact text
    /// livekit-client treats as "not allowed".
    #[error("requested room does not exist")]
    RoomNotFound,
    /// The room is full.
    #[error("room is full")]
    RoomFull,
    /// The grant names no room.
    #[error("invalid room name")]
    InvalidRoom,
    /// A resume names no participant of the grant's identity in its room (it left, timed out, or
    /// never was): the client must join afresh.
    #[error("no session to resume")]
    NoSession,
    /// The node is shutting down ([`Sfu::shut_down`]).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The identity joined or resumed in this room more often than [`JOIN_BURST`] at once and
    /// one per [`JOIN_REFILL`] after.
    #[error("too many joins for this identity; try again in a minute")]
    TooManyJoins,
}

/// Joins and resumes one identity may make in one room at once, and how often it gets one more
/// after. Each costs the media loop every room shares a pair of peer connections (a resume, an
/// ICE restart) and tells the room's others; a token is valid for its lifetime and each socket
/// has its own frame budget, so without this a participant could join and leave in a loop. A
/// client joins once and resumes after each network change (livekit-client tries up to ten
/// times, most of which fail before they reach the server).
pub const JOIN_BURST: u32 = 10;
pub const JOIN_REFILL: Duration = Duration::from_secs(6);

/// How long a refused negotiation ([`MediaEvent::NegotiationRefused`]) is remembered for its
/// (room, identity). The session it came from is asked to join again, since new connections
/// clear what a renegotiation may have confused. A later session of the identity refused within
/// this time is ended: its client offers what the SFU cannot take again (livekit-client
/// republishes every track a few seconds after joining again). Short enough that two unrelated
/// refusals are not taken for one.
pub const REFUSALS_REMEMBERED: Duration = Duration::from_secs(120);

/// Join budgets kept before those full again are forgotten; past it, they are looked through
/// each time their number has doubled (so a join costs the same on average however many came).
const JOIN_BUDGETS_PRUNED_FROM: usize = 4096;

/// Tunables, with LiveKit's defaults. Its `Debug` output leaves out TURN credentials.
#[derive(Clone)]
pub struct SfuConfig {
    /// Seconds between client pings (JoinResponse `ping_interval`).
    pub ping_interval: Duration,
    /// Silence after which a participant's socket is taken for dead (JoinResponse `ping_timeout`):
    /// closed, the participant kept for a resume for [`RESUME_GRACE`] more.
    pub ping_timeout: Duration,
    /// How long an empty room lives.
    pub empty_timeout: Duration,
    /// Participants per room (0 = unlimited).
    pub max_participants: u32,
    /// Seed for sid generation; the shell draws it at random.
    pub sid_seed: u64,
    /// `node_id` in ServerInfo.
    pub node_id: String,
    /// Offer `subscriber_primary` to v0 clients that subscribe (LiveKit's behaviour). Turning it
    /// off makes the client treat its publisher PC as primary.
    pub subscriber_primary: bool,
    /// STUN/TURN servers handed to clients in the JoinResponse (`ice_servers`).
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    /// How often a connected participant is sent a fresh token (`refresh_token`), so that a
    /// reconnect after its first token expired still succeeds (LiveKit: 5 minutes).
    pub token_refresh_interval: Duration,
    /// How long those tokens are valid (LiveKit: 10 minutes).
    pub token_ttl: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            empty_timeout: Duration::from_secs(300),
            max_participants: 0,
            sid_seed: 0,
            node_id: "consulta-sfu".to_owned(),
            subscriber_primary: true,
            ice_servers: Vec::new(),
            token_refresh_interval: Duration::from_secs(5 * 60),
            token_ttl: Duration::from_secs(10 * 60),
        }
    }
}

impl std::fmt::Debug for SfuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ice_servers: Vec<IceServerUrls<'_>> =
            self.ice_servers.iter().map(IceServerUrls).collect();
        f.debug_struct("SfuConfig")
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("empty_timeout", &self.empty_timeout)
            .field("max_participants", &self.max_participants)
            .field("sid_seed", &self.sid_seed)
            .field("node_id", &self.node_id)
            .field("subscriber_primary", &self.subscriber_primary)
            .field("ice_servers", &ice_servers)
            .field("token_refresh_interval", &self.token_refresh_interval)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// An ICE server in `Debug` output: its URLs and user name, not its credential.
struct IceServerUrls<'a>(&'a livekit_protocol::IceServer);

impl std::fmt::Debug for IceServerUrls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.0.urls)
            .field("username", &self.0.username)
            .finish_non_exhaustive()
    }
}

/// Connection options from the `/rtc` query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOptions {
    /// `auto_subscribe` (default true).
    pub auto_subscribe: bool,
    /// `protocol` (client protocol version).
    pub protocol: i32,
    /// `adaptive_stream`.
    pub adaptive_stream: bool,
    /// `client_protocol`: the client's feature level, which the others read from its info
    /// (livekit-client sends RPC over data streams, without the 15 KiB bound, only to a
    /// participant whose `client_protocol` is 1 or more).
    pub client_protocol: i32,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            auto_subscribe: true,
            protocol: PROTOCOL_VERSION,
            adaptive_stream: false,
            client_protocol: 0,
        }
    }
}

/// What the shell must do. Its `Debug` output leaves out join and reconnect responses (TURN
/// credentials) and refreshed tokens.
#[derive(Clone, PartialEq)]
pub enum Output {
    /// Send one frame on the connection.
    Send {
        /// Where.
        conn: ConnId,
        /// What.
        message: Box<SignalResponse>,
    },
    /// Close the connection (after sending whatever was queued for it before).
    Close {
        /// Which.
        conn: ConnId,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use signal_response::Message as M;
        match self {
            Self::Send { conn, message } => {
                let mut send = f.debug_struct("Send");
                send.field("conn", conn);
                match &message.message {
                    Some(M::Join(_)) => send.field("message", &"Join(..)"),
                    Some(M::Reconnect(_)) => send.field("message", &"Reconnect(..)"),
                    Some(M::RefreshToken(_)) => send.field("message", &"RefreshToken(..)"),
                    _ => send.field("message", message),
                };
                send.finish()
            }
            Self::Close { conn } => f.debug_struct("Close").field("conn", conn).finish(),
        }
    }
}

#[derive(Debug)]
struct Participant {
    sid: ParticipantSid,
    conn: ConnId,
    identity: String,
    name: String,
    metadata: String,
    attributes: HashMap<String, String>,
    /// What its client said of its feature level ([`JoinOptions::client_protocol`]).
    client_protocol: i32,
    state: participant_info::State,
    version: u32,
    joined_at_ms: i64,
    permission: ParticipantPermission,
    tracks: Vec<TrackInfo>,
    /// Client ids (`cid`) of its published tracks, and their sids; a duplicate is refused.
    cids: BTreeMap<String, TrackSid>,
    last_seen: Instant,
    auto_subscribe: bool,
    /// The protocol version its client joined with.
    protocol: i32,
    /// Tracks (of others) this participant receives.
    subscriptions: BTreeSet<TrackSid>,
    /// Tracks (of others) it asked for, or was subscribed to by `auto_subscribe`, that their
    /// publisher does not allow it: subscribed once the publisher does.
    refused: BTreeSet<TrackSid>,
    /// Who may receive its own tracks (`subscription_permission`).
    subscribers_allowed: SubscribePermission,
    /// It was told a publisher's permission at least once (`subscription_permission_update`):
    /// a resume tells it again where it stands ([`Sfu::handle_resume`]).
    told_permission: bool,
    /// Its grant says it records the room: it receives every track, whatever the publishers'
    /// permissions (as in LiveKit).
    recorder: bool,
    /// Per-track wishes from `track_setting`, kept even before the subscription exists.
    settings: HashMap<TrackSid, TrackSettings>,
    /// The grant it joined with and when it is next sent a renewed token (with signing keys).
    renewal: Option<(JoinGrant, Instant)>,
    /// While its socket is gone: what it was sent meanwhile, for a resume to replay.
    outbox: Option<Outbox>,
    /// How often changes it asks for itself (mute, metadata, audio features) reach the others.
    own_changes: OwnChanges,
}

/// Paces the updates a participant's own requests send the rest of its room. Each is its whole
/// info, to everyone: a client toggling `mute` at its frame budget (50 a second) with an info of
/// 60 KB (eight tracks of long names) sent each of the others 3 MB a second, filling their
/// queues until they were dropped (review helper-100). Past a burst of
/// [`OWN_CHANGES_BURST`], the others hear of its changes [`OWN_CHANGES_PER_SEC`] times a
/// second, each time its latest info; a client asking at a person's pace is never held.
#[derive(Debug, Clone, Copy)]
struct OwnChanges {
    /// Updates it may send now, and when that was counted.
    tokens: f64,
    at: Instant,
    /// A change not sent yet: its info goes once a token is there.
    held: bool,
}

const OWN_CHANGES_BURST: f64 = 10.0;
const OWN_CHANGES_PER_SEC: f64 = 2.0;

impl OwnChanges {
    fn new(now: Instant) -> Self {
        Self {
            tokens: OWN_CHANGES_BURST,
            at: now,
            held: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * OWN_CHANGES_PER_SEC).min(OWN_CHANGES_BURST);
        self.at = now;
    }

    /// Whether a change may go to the others at `now` (taking a token); else it is held.
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // At [`due`](Self::due) exactly, the float sum may fall short of one by a rounding.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            self.held = true;
            false
        }
    }

    /// When a held change may go.
    fn due(&self) -> Option<Instant> {
        self.held.then(|| {
            let wait = ((1.0 - self.tokens).max(0.0) / OWN_CHANGES_PER_SEC).min(1.0);
            self.at + Duration::from_secs_f64(wait)
        })
    }
}

/// Tracks a participant may have published at once: a camera, a microphone, a screen share and
/// its audio, with room for a second camera or a codec switch. Each one is announced to the whole
/// room and renegotiated with every subscriber.
const MAX_TRACKS: usize = 8;

/// Simulcast layers and codecs one `add_track` may describe (livekit-client sends at most three
/// layers and two codecs); each codec carries the layers, so both are bounded.
const MAX_LAYERS: usize = 4;
const MAX_CODECS: usize = 4;

/// Longest `cid`, `name`, `stream`, codec name or layer `rid` of a track, in bytes: each is sent
/// to everyone in the room with every update of its publisher.
const MAX_TRACK_TEXT: usize = 256;

/// Most audio features a track may list (LiveKit defines six).
const MAX_AUDIO_FEATURES: usize = 8;

/// Most packet trailer features a track may list (LiveKit defines three). Unbounded, a frame
/// of 256 KiB listed a quarter of a million, copied to the room at each update of the publisher.
const MAX_TRAILER_FEATURES: usize = 8;

/// The most a participant may set as its own name, metadata and attributes (keys and values
/// together), in bytes. Each change goes to everyone in the room, and into every token the
/// participant is sent after it, which must stay within [`crate::auth::MAX_TOKEN_BYTES`] for its
/// resumes to be taken: so far below LiveKit's 64 kB limits (review helper-76), and checked
/// against the token itself too (JSON escaping may double the text).
const MAX_NAME_BYTES: usize = 256;
const MAX_METADATA_BYTES: usize = 2048;
const MAX_ATTRIBUTES_BYTES: usize = 2048;

/// Most messages kept for a participant whose socket dropped. Its ping timeout and
/// [`RESUME_GRACE`] (25 s) end the wait; a busy room sends a few a second. Past it the session
/// cannot be resumed, and the client joins afresh.
const MAX_OUTBOX: usize = 512;

/// How long livekit-client's first five reconnection attempts can take: 0, 0.3, 1.2, 2.7 and
/// 4.8 s apart, each stretched by up to half again at random (`DefaultReconnectPolicy`).
const RESUME_BACKOFF: Duration = Duration::from_secs(15);

/// How long a participant silent for its ping timeout is still kept for a resume. A socket that
/// went half-open (a NAT or firewall forgot it, Wi-Fi stalled) is noticed by both ends at the
/// same moment: the server counts the ping timeout from the client's last ping, and the client
/// from the pong to it. Removed then, the session was gone by the time the client's resume came
/// (a new socket, TLS, the upgrade), and the client had to join afresh: the others saw it leave
/// and come back, and its connections and keys started over (review helper-71). This covers
/// livekit-client's first three attempts (0, 0.3 and 1.2 s apart, with their jitter, and each
/// connection's set-up), at the cost of a participant really gone being seen to leave 10 s later.
pub const RESUME_GRACE: Duration = Duration::from_secs(10);

/// Most departures a room keeps for resumes ([`Room::departures`]). A consultation sees a few; a
/// room whose churn outran this over the time a dropped participant is kept (S5 runs ≈20
/// departures a second) might leave a resumed client one stale participant until that one's
/// identity comes back.
const MAX_DEPARTURES: usize = 1024;

/// What a participant whose socket dropped was sent meanwhile.
#[derive(Debug, Default)]
struct Outbox {
    messages: Vec<signal_response::Message>,
    overflowed: bool,
    /// When the server saw the socket drop.
    since: Option<Instant>,
}

impl Outbox {
    /// Keeps `message` unless a resume redoes it anyway: SDP and candidates (the ICE restart
    /// renegotiates both connections), pongs, tokens (a fresh one follows the resume) and
    /// subscription permissions (the resume says where each track stands).
    fn keep(&mut self, message: signal_response::Message) {
        use signal_response::Message as M;
        if matches!(
            message,
            M::Offer(_)
                | M::Answer(_)
                | M::Trickle(_)
                | M::Pong(_)
                | M::PongResp(_)
                | M::RefreshToken(_)
                | M::SubscriptionPermissionUpdate(_)
        ) {
            return;
        }
        if self.messages.len() >= MAX_OUTBOX {
            self.overflowed = true;
        } else {
            self.messages.push(message);
        }
    }
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            sid: self.sid.to_string(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
            state: self.state.into(),
            tracks: self.tracks.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            version: self.version,
            permission: Some(self.permission.clone()),
            is_publisher: !self.tracks.is_empty(),
            kind: participant_info::Kind::Standard.into(),
            client_protocol: self.client_protocol,
            ..ParticipantInfo::default()
        }
    }

    fn bump(&mut self) {
        self.version = self.version.saturating_add(1);
    }

    /// Whether `rule`, a publisher's, lets it receive `track`; a recorder receives every track,
    /// as in LiveKit.
    fn may_receive(&self, rule: &SubscribePermission, track: &TrackSid) -> bool {
        self.recorder || rule.allows(&self.identity, track)
    }

    fn hidden(&self) -> bool {
        self.permission.hidden
    }
}

#[derive(Debug)]
struct Room {
    sid: String,
    name: RoomName,
    created_ms: i64,
    empty_since: Option<Instant>,
    participants: BTreeMap<ParticipantSid, Participant>,
    /// What each published video track's publisher was told about its layers.
    dynacast: HashMap<TrackSid, Dynacast>,
    /// Who left lately, and when, for [`Sfu::handle_resume`] to say again.
    departures: VecDeque<(Instant, ParticipantInfo)>,
}

impl Room {
    /// What everyone visible but `sid` looks like now (for a join or a resume).
    fn others_than(&self, sid: &ParticipantSid) -> Vec<ParticipantInfo> {
        self.participants
            .values()
            .filter(|p| &p.sid != sid && !p.hidden())
            .map(Participant::info)
            .collect()
    }

    fn info(&self, config: &SfuConfig) -> RoomInfo {
        let visible = self.participants.values().filter(|p| !p.hidden());
        RoomInfo {
            sid: self.sid.clone(),
            name: self.name.to_string(),
            empty_timeout: u32::try_from(config.empty_timeout.as_secs()).unwrap_or(u32::MAX),
            departure_timeout: 20,
            max_participants: config.max_participants,
            creation_time: self.created_ms / 1000,
            creation_time_ms: self.created_ms,
            num_participants: u32::try_from(visible.clone().count()).unwrap_or(u32::MAX),
            num_publishers: u32::try_from(visible.filter(|p| !p.tracks.is_empty()).count())
                .unwrap_or(u32::MAX),
            ..RoomInfo::default()
        }
    }

    /// Who publishes each track of the room. Made once for a request that names tracks: a
    /// `track_setting` or `subscription` may name thousands, and looking each up over every
    /// participant's tracks cost the loop every room shares that many times the room's tracks.
    /// (A map of borrowed sids: nothing is allocated but the map.)
    fn track_owners(&self) -> HashMap<&str, &ParticipantSid> {
        self.participants
            .values()
            .flat_map(|p| p.tracks.iter().map(|t| (t.sid.as_str(), &p.sid)))
            .collect()
    }
}

/// The signalling state machine of one SFU node. Its `Debug` output is a summary: no
/// participants' names or metadata, no queued frames.
pub struct Sfu<M> {
    config: SfuConfig,
    media: M,
    epoch: Instant,
    epoch_unix_ms: i64,
    sids: SidGen,
    next_conn: u64,
    rooms: BTreeMap<RoomName, Room>,
    conns: HashMap<ConnId, (RoomName, ParticipantSid)>,
    /// Connections whose socket dropped, of participants kept for a resume.
    dropped: HashMap<ConnId, (RoomName, ParticipantSid)>,
    out: VecDeque<Output>,
    /// Keys for `refresh_token` (none: no refreshes).
    keys: ApiKeys,
    /// [`Sfu::shut_down`] ran: no one joins or resumes any more.
    shut_down: bool,
    /// Joins and resumes by room and identity ([`JOIN_BURST`]), and how many there may be before
    /// the full ones are forgotten ([`JOIN_BUDGETS_PRUNED_FROM`]).
    join_budgets: HashMap<(RoomName, String), RateLimiter>,
    prune_join_budgets_at: usize,
    /// Which session of each (room, identity) last had a negotiation refused, and when, for
    /// [`REFUSALS_REMEMBERED`].
    refusals: HashMap<(RoomName, String), (ParticipantSid, Instant)>,
}

impl<M> std::fmt::Debug for Sfu<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("config", &self.config)
            .field("rooms", &self.rooms.len())
            .field("connections", &self.conns.len())
            .field("dropped", &self.dropped.len())
            .field("queued", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<M: MediaEngine> Sfu<M> {
    /// A node with no rooms. `epoch` and `epoch_unix_ms` name the same moment, so the core can
    /// derive wall-clock timestamps (`joined_at`, pong) from the `Instant`s it is given.
    pub fn new(config: SfuConfig, media: M, epoch: Instant, epoch_unix_ms: i64) -> Self {
        Self {
            sids: SidGen::new(config.sid_seed),
            config,
            media,
            epoch,
            epoch_unix_ms,
            next_conn: 1,
            rooms: BTreeMap::new(),
            conns: HashMap::new(),
            dropped: HashMap::new(),
            out: VecDeque::new(),
            keys: ApiKeys::new(),
            shut_down: false,
            join_budgets: HashMap::new(),
            prune_join_budgets_at: JOIN_BUDGETS_PRUNED_FROM,
            refusals: HashMap::new(),
        }
    }

    /// Takes one of `identity`'s joins in `room` at `now` ([`JOIN_BURST`]).
    fn take_join(
        &mut self,
        now: Instant,
        room: &RoomName,
        identity: &str,
    ) -> Result<(), JoinError> {
        if self.join_budgets.len() >= self.prune_join_budgets_at {
            // Those full again are as good as new. The map holds at most the (room, identity)
            // pairs that joined in the last minute, doubled.
            self.join_budgets.retain(|_, budget| !budget.is_full(now));
            self.prune_join_budgets_at =
                JOIN_BUDGETS_PRUNED_FROM.max(self.join_budgets.len().saturating_mul(2));
        }
        self.join_budgets
            .entry((room.clone(), identity.to_owned()))
            .or_insert_with(|| RateLimiter::refilled_every(JOIN_BURST, JOIN_REFILL))
            .check(now)
            .map_err(|_| JoinError::TooManyJoins)
    }

    /// Keys to sign renewed tokens with (each participant's with the key of its own token).
    /// Without them no `refresh_token` is sent.
    pub fn set_signing_keys(&mut self, keys: ApiKeys) {
        self.keys = keys;
    }

    /// The media engine, for the shell to reach its own channels.
    pub fn media_mut(&mut self) -> &mut M {
        &mut self.media
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.epoch);
        self.epoch_unix_ms
            .saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Creates an empty room (as the RTC auth service does for full-access users). Idempotent.
    pub fn create_room(&mut self, now: Instant, name: RoomName) {
        let created_ms = self.unix_ms(now);
        if !self.rooms.contains_key(&name) {
            let sid = self.sids.room();
            tracing::info!(room = %name, room_sid = %sid, "room created");
            self.rooms.insert(
                name.clone(),
                Room {
                    sid,
                    name,
                    created_ms,
                    empty_since: Some(now),
                    participants: BTreeMap::new(),
                    dynacast: HashMap::new(),
                    departures: VecDeque::new(),
                },
            );
        }
    }

    /// Rooms open and participants in them (for metrics).
    pub fn counts(&self) -> (usize, usize) {
        let participants = self.rooms.values().map(|r| r.participants.len()).sum();
        (self.rooms.len(), participants)
    }

    /// Whether `room` exists.
    pub fn has_room(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    /// The video tracks the participant on `conn` receives (their sids). livekit-client sends a
    /// `track_setting` for each one at once after a resume, and up to three as each is first
    /// shown after a join, so the shell owes it those beyond its ordinary burst for a while
    /// ([`crate::signal::OwedSettings`]).
    pub fn video_subscriptions(&self, conn: ConnId) -> Vec<TrackSid> {
        let Some((room, sid)) = self.conns.get(&conn) else {
            return Vec::new();
        };
        let Some((r, p)) = self
            .rooms
            .get(room)
            .and_then(|r| Some((r, r.participants.get(sid)?)))
        else {
            return Vec::new();
        };
        r.participants
            .values()
            .flat_map(|publisher| &publisher.tracks)
            .filter(|t| t.r#type == i32::from(TrackType::Video))
            .filter_map(|t| TrackSid::parse(&t.sid))
            .filter(|t| p.subscriptions.contains(t))
            .collect()
    }

    /// Checks that `grant` could join at `now`, without changing anything (for `/rtc/validate`
    /// and before the WebSocket upgrade): its identity's join budget included, so that a client
    /// past it learns why before it connects.
    pub fn check_join(&self, now: Instant, grant: &JoinGrant) -> Result<RoomName, JoinError> {
        if self.shut_down {
            return Err(JoinError::ShuttingDown);
        }
        let name = RoomName::parse(grant.room()).ok_or(JoinError::InvalidRoom)?;
        let budget = self
            .join_budgets
            .get(&(name.clone(), grant.identity.clone()));
        if budget.is_some_and(|budget| !budget.would_admit(now)) {
            return Err(JoinError::TooManyJoins);
        }
        match self.rooms.get(&name) {
            None if !grant.video.room_create => Err(JoinError::RoomNotFound),
            Some(room)
                if self.config.max_participants > 0
                    && room
                        .participants
                        .values()
                        .filter(|p| p.identity != grant.identity)
                        .count()
                        >= self.config.max_participants as usize =>
            {
                Err(JoinError::RoomFull)
            }
            _ => Ok(name),
        }
    }

    /// A verified participant connects. On success the JoinResponse is queued for the returned
    /// connection, others are told, and an older session with the same identity is kicked.
    pub fn handle_join(
        &mut self,
        now: Instant,
        grant: JoinGrant,
        options: JoinOptions,
    ) -> Result<ConnId, JoinError> {
        let name = self.check_join(now, &grant)?;
        self.take_join(now, &name, &grant.identity)?;
        self.create_room(now, name.clone());

        let duplicate = self.rooms.get(&name).and_then(|room| {
            room.participants
                .values()
                .find(|p| p.identity == grant.identity)
                .map(|p| (p.sid.clone(), p.conn))
        });
        if let Some((old_sid, old)) = duplicate {
            tracing::info!(room = %name, conn = %old, "duplicate identity: closing the older session");
            self.send(
                old,
                leave(
                    livekit_protocol::DisconnectReason::DuplicateIdentity,
                    LeaveAction::Disconnect,
                ),
            );
            self.remove_participant(
                now,
                &name,
                &old_sid,
                livekit_protocol::DisconnectReason::DuplicateIdentity,
            );
            self.out.push_back(Output::Close { conn: old });
        }

        let conn = ConnId(self.next_conn);
        self.next_conn = self.next_conn.saturating_add(1);
        let sid = self.sids.participant();
        let video = &grant.video;
        let sources: Vec<i32> = video
            .can_publish_sources
            .iter()
            .filter_map(|s| source_from_grant(s))
            .map(Into::into)
            .collect();
        // An empty list allows every source: a grant that names only sources this server does not
        // know allows none, rather than all.
        let no_known_source = sources.is_empty() && !video.can_publish_sources.is_empty();
        let permission = ParticipantPermission {
            can_subscribe: video.can_subscribe(),
            can_publish: video.can_publish() && !no_known_source,
            can_publish_data: video.can_publish_data(),
            can_publish_sources: sources,
            hidden: video.hidden,
            can_update_metadata: video.can_update_own_metadata(),
            ..ParticipantPermission::default()
        };
        let renewal = (!self.keys.is_empty())
            .then(|| (grant.clone(), now + self.config.token_refresh_interval));
        let participant = Participant {
            sid: sid.clone(),
            conn,
            identity: grant.identity,
            name: grant.name,
            metadata: grant.metadata,
            attributes: grant.attributes,
            client_protocol: options.client_protocol,
            state: participant_info::State::Joined,
            version: 1,
            joined_at_ms: self.unix_ms(now),
            permission,
            tracks: Vec::new(),
            cids: BTreeMap::new(),
            last_seen: now,
            auto_subscribe: options.auto_subscribe,
            protocol: options.protocol,
            subscriptions: BTreeSet::new(),
            refused: BTreeSet::new(),
            subscribers_allowed: SubscribePermission::Everyone,
            told_permission: false,
            recorder: grant.video.recorder,
            settings: HashMap::new(),
            renewal,
            outbox: None,
            own_changes: OwnChanges::new(now),
        };
        let Some(room) = self.rooms.get_mut(&name) else {
            return Err(JoinError::RoomNotFound);
        };
        room.empty_since = None;
        tracing::info!(room = %name, participant = %sid, %conn, "participant joined");

        let others = room.others_than(&sid);
        let can_subscribe = participant.permission.can_subscribe;
        let own = participant.info();
        let hidden = participant.hidden();
        room.participants.insert(sid.clone(), participant);
        let room_info = room.info(&self.config);
        let join = JoinResponse {
            room: Some(room_info),
            participant: Some(own.clone()),
            other_participants: others,
            server_version: SERVER_VERSION.to_owned(),
            server_info: Some(self.server_info()),
            // v0 dual PeerConnection: LiveKit makes the subscriber PC primary for clients that
            // subscribe and speak protocol > 2 (spec §2.4; livekit pkg/rtc/room.go).
            subscriber_primary: self.config.subscriber_primary
                && can_subscribe
                && options.protocol > 2,
            ping_interval: secs_i32(self.config.ping_interval),
            ping_timeout: secs_i32(self.config.ping_timeout),
            client_configuration: Some(client_configuration()),
            fast_publish: true,
            ice_servers: self.config.ice_servers.clone(),
            ..JoinResponse::default()
        };
        self.conns.insert(conn, (name.clone(), sid.clone()));
        self.send(conn, signal_response::Message::Join(join));
        if !hidden {
            self.broadcast_update(&name, &sid, own);
        }

        if let Some(p) = self.rooms.get(&name).and_then(|r| r.participants.get(&sid)) {
            self.media
                .participant_joined(&name, &sid, &p.identity, p.permission.can_publish_data);
        }
        if can_subscribe && options.auto_subscribe {
            let tracks: Vec<(ParticipantSid, TrackSid)> = self
                .rooms
                .get(&name)
                .map(|room| {
                    room.participants
                        .values()
                        .filter(|p| p.sid != sid)
                        .flat_map(|p| {
                            p.tracks
                                .iter()
                                .filter_map(|t| TrackSid::parse(&t.sid))
                                .map(|t| (p.sid.clone(), t))
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (publisher, track) in tracks {
                self.subscribe(&name, &sid, &publisher, track);
            }
        }
        if can_subscribe {
            self.media.needs_subscriber_offer(&sid);
        }
        self.refresh_dynacast(&name, now);
        Ok(conn)
    }

    /// A decoded frame from `conn`.
    pub fn handle_request(&mut self, now: Instant, conn: ConnId, request: SignalRequest) {
        let Some((room, sid)) = self.conns.get(&conn).cloned() else {
            return;
        };
        if let Some(p) = self.participant_mut(&room, &sid) {
            p.last_seen = now;
        }
        let Some(message) = request.message else {
            return;
        };
        use signal_request::Message as M;
        let demand_may_change = matches!(
            message,
            M::AddTrack(_) | M::Subscription(_) | M::SyncState(_) | M::SubscriptionPermission(_)
        );
        match message {
            M::Offer(offer) => self.media.publisher_offer(&sid, offer),
            M::Answer(answer) => self.media.subscriber_answer(&sid, answer),
            M::Trickle(trickle) => {
                let target =
                    SignalTarget::try_from(trickle.target).unwrap_or(SignalTarget::Publisher);
                self.media
                    .remote_candidate(&sid, target, trickle.candidate_init);
            }
            M::AddTrack(add) => self.add_track(now, &room, &sid, add),
            M::Mute(mute) => self.mute(now, &room, &sid, &mute.sid, mute.muted),
            M::UpdateAudioTrack(update) => {
                self.update_audio_track(now, &room, &sid, conn, update);
            }
            M::UpdateMetadata(update) => self.update_metadata(now, &room, &sid, conn, update),
            // Data tracks (livekit-client's `publishDataTrack`) are not relayed: refused at once,
            // where silence made the client wait out its 10 s timeout (review helper-75).
            M::PublishDataTrackRequest(publish) => self.send(
                conn,
                signal_response::Message::RequestResponse(livekit_protocol::RequestResponse {
                    reason: livekit_protocol::request_response::Reason::NotAllowed.into(),
                    message: "data tracks are not supported by this server".to_owned(),
                    // Named back by its handle and a name within bounds, not whole: a request
                    // may be as large as a frame, and a client that does not read would have each
                    // copy queued for it (livekit-client reads the handle).
                    request: Some(
                        livekit_protocol::request_response::Request::PublishDataTrack(
                            livekit_protocol::PublishDataTrackRequest {
                                pub_handle: publish.pub_handle,
                                name: bounded(publish.name, MAX_TRACK_TEXT),
                                ..Default::default()
                            },
                        ),
                    ),
                    ..livekit_protocol::RequestResponse::default()
                }),
            ),
            M::Subscription(update) => self.subscription(&room, &sid, update),
            M::TrackSetting(setting) => {
                let changed = self.track_setting(&room, &sid, &setting);
                if !changed.is_empty() {
                    self.refresh_dynacast_of(&room, now, Some(&changed));
                }
            }
            M::SyncState(sync) => self.sync_state(&room, &sid, conn, sync),
            M::SubscriptionPermission(rule) => self.subscription_permission(&room, &sid, &rule),
            M::Leave(_) => {
                tracing::info!(%room, participant = %sid, "participant left");
                self.remove_participant(
                    now,
                    &room,
                    &sid,
                    livekit_protocol::DisconnectReason::ClientInitiated,
                );
                self.out.push_back(Output::Close { conn });
            }
            M::Ping(_) => {
                let now_ms = self.unix_ms(now);
                self.send(conn, signal_response::Message::Pong(now_ms));
            }
            M::PingReq(ping) => {
                let now_ms = self.unix_ms(now);
                self.send(
                    conn,
                    signal_response::Message::PongResp(Pong {
                        last_ping_timestamp: ping.timestamp,
                        timestamp: now_ms,
                    }),
                );
            }
            // Tolerated and ignored for now (spec §6).
            _ => tracing::debug!(%conn, "ignored signal request"),
        }
        if demand_may_change {
            self.refresh_dynacast(&room, now);
        }
    }

    /// The WebSocket of `conn` is gone without a `leave`. The participant stays, its media
    /// flowing, until it resumes on a new connection ([`Sfu::handle_resume`]) or its ping timeout
    /// and [`RESUME_GRACE`] pass ([`Sfu::handle_timeout`]; others then see it DISCONNECTED): a
    /// phone that changes networks or a proxy that drops an idle socket costs the call nothing.
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        if let Some((room, sid)) = self.conns.remove(&conn) {
            tracing::info!(%room, participant = %sid, %conn, "signal connection closed; kept for a resume");
            if let Some(p) = self.participant_mut(&room, &sid) {
                p.outbox = Some(Outbox {
                    since: Some(now),
                    ..Outbox::default()
                });
            }
            self.dropped.insert(conn, (room, sid));
        }
    }

    /// The node is stopping (a restart, a deploy): every participant is told to join again, which
    /// livekit-client does at once and keeps trying for a while (`leave` with `SERVER_SHUTDOWN`
    /// and action RECONNECT; DISCONNECT would end the call in the user's face), and its
    /// connection is closed. Rooms and participants are gone, and joins and resumes are refused
    /// from now on. Nobody is told of anyone else's departure: everyone is leaving.
    pub fn shut_down(&mut self, _now: Instant) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let rooms = std::mem::take(&mut self.rooms);
        let participants = rooms
            .into_values()
            .flat_map(|r| r.participants.into_values());
        let mut told = 0usize;
        for p in participants {
            self.media.participant_left(&p.sid);
            if self.conns.remove(&p.conn).is_some() {
                self.send(
                    p.conn,
                    leave(
                        livekit_protocol::DisconnectReason::ServerShutdown,
                        LeaveAction::Reconnect,
                    ),
                );
                self.out.push_back(Output::Close { conn: p.conn });
                told += 1;
            }
        }
        self.dropped.clear();
        tracing::info!(participants_told = told, "shutting down: sessions closed");
    }

    /// The shell closed `conn` because its client misbehaved (stopped reading its signalling, or
    /// flooded it): unlike a dropped socket, the participant goes at once.
    pub fn handle_kick(&mut self, now: Instant, conn: ConnId) {
        if let Some((room, sid)) = self.conns.get(&conn).cloned() {
            self.remove_participant(
                now,
                &room,
                &sid,
                livekit_protocol::DisconnectReason::SignalClose,
            );
        }
    }

    /// A verified participant's client reconnects its signalling (`reconnect=1`) as `sid`, the
    /// session it had: the participant, its tracks, subscriptions and PeerConnections stay, the
    /// client gets a `reconnect` response, what it may have missed (the others' state) and,
    /// through the media engine, an ICE restart of its subscriber PC; it restarts its publisher
    /// PC's own. [`JoinError::NoSession`] when there is no such participant of the grant's
    /// identity in its room: the client must then join afresh.
    pub fn handle_resume(
        &mut self,
        now: Instant,
        grant: &JoinGrant,
        sid: &str,
    ) -> Result<ConnId, JoinError> {
        if self.shut_down {
            return Err(JoinError::ShuttingDown);
        }
        let name = RoomName::parse(grant.room()).ok_or(JoinError::InvalidRoom)?;
        let resumable = self.rooms.get(&name).is_some_and(|room| {
            ParticipantSid::parse(sid)
                .and_then(|sid| room.participants.get(&sid))
                .is_some_and(|p| p.identity == grant.identity)
        });
        if resumable {
            self.take_join(now, &name, &grant.identity)?;
        }
        let conn = ConnId(self.next_conn);
        let kept = self.departures_kept();
        let room = self.rooms.get_mut(&name).ok_or(JoinError::NoSession)?;
        let p = ParticipantSid::parse(sid)
            .and_then(|sid| room.participants.get_mut(&sid))
            .filter(|p| p.identity == grant.identity)
            .filter(|p| !p.outbox.as_ref().is_some_and(|o| o.overflowed))
            .ok_or(JoinError::NoSession)?;
        self.next_conn = self.next_conn.saturating_add(1);
        let old = std::mem::replace(&mut p.conn, conn);
        p.last_seen = now;
        let outbox = p.outbox.take();
        // Where it stands with each publisher's permission, once it was told any: an update
        // that went to the old socket before the server saw it drop is in no outbox.
        let permissions: Vec<(TrackSid, bool)> = if p.told_permission {
            let subscribed = p.subscriptions.iter().map(|t| (t.clone(), true));
            subscribed
                .chain(p.refused.iter().map(|t| (t.clone(), false)))
                .collect()
        } else {
            Vec::new()
        };
        // The departures it may have missed came at most `kept` before its client gave up on the
        // socket, which the server saw then, or sees now (the old socket still open).
        let gave_up = outbox.as_ref().and_then(|o| o.since).unwrap_or(now);
        let missed = outbox.map(|o| o.messages).unwrap_or_default();
        // A refresh may have gone to the dropped socket: a fresh token at the next tick.
        if let Some((_, at)) = p.renewal.as_mut() {
            *at = now;
        }
        let sid = p.sid.clone();
        // The layers each of its cameras should send, as they are now: an update that went to the
        // old socket before the server saw it drop is in no outbox, and livekit-client keeps its
        // layers across a resume (a patient alone has them all off until the doctor comes).
        let layers: Vec<livekit_protocol::SubscribedQualityUpdate> = p
            .tracks
            .iter()
            .filter_map(|t| {
                let state = room.dynacast.get(&TrackSid::parse(&t.sid)?)?;
                Some(dynacast::quality_update(t, state.current()))
            })
            .collect();
        // Everyone as they are now, itself too: livekit-client sets a track's mute again when
        // its own info says otherwise (`LocalParticipant.updateInfo`), which is how a mute that
        // went to the dropped socket reaches the server (the others go on seeing it as it was,
        // and hearing nothing or everything, until then).
        let mut everyone = room.others_than(&sid);
        if let Some(me) = room.participants.get(&sid) {
            everyone.insert(0, me.info());
        }
        let departures = departures_to_repeat(room, &missed, gave_up.checked_sub(kept));
        let owners = room.track_owners();
        let permissions: Vec<(ParticipantSid, TrackSid, bool)> = permissions
            .into_iter()
            .filter_map(|(track, allowed)| {
                Some(((*owners.get(track.as_str())?).clone(), track, allowed))
            })
            .collect();
        // The server may not have seen the old socket go yet.
        if self.conns.remove(&old).is_some() {
            self.out.push_back(Output::Close { conn: old });
        }
        self.dropped.remove(&old);
        tracing::info!(room = %name, participant = %sid, %conn, "participant resumed");
        self.conns.insert(conn, (name, sid.clone()));
        self.send(
            conn,
            signal_response::Message::Reconnect(ReconnectResponse {
                ice_servers: self.config.ice_servers.clone(),
                client_configuration: Some(client_configuration()),
                server_info: Some(self.server_info()),
                last_message_seq: self.media.last_reliable_sequence(&sid),
            }),
        );
        // What it was sent while its socket was gone, in order (departures, layers to send, track
        // states, publish confirmations); the departures it may have missed before the server saw
        // the socket drop; then everyone as they are now, itself first, which also covers the
        // other updates that went to the old socket (livekit-client ignores a participant version
        // older than the one it has).
        for message in missed {
            self.send(conn, message);
        }
        if !departures.is_empty() {
            self.send(
                conn,
                signal_response::Message::Update(ParticipantUpdate {
                    participants: departures,
                }),
            );
        }
        self.send(
            conn,
            signal_response::Message::Update(ParticipantUpdate {
                participants: everyone,
            }),
        );
        for update in layers {
            self.send(
                conn,
                signal_response::Message::SubscribedQualityUpdate(update),
            );
        }
        for (publisher, track, allowed) in permissions {
            self.send_permission(conn, &publisher, &track, allowed);
        }
        self.media.participant_resumed(&sid);
        Ok(conn)
    }

    /// Something from the media engine, at `now`.
    pub fn handle_media_event(&mut self, now: Instant, event: MediaEvent) {
        match event {
            MediaEvent::PublisherAnswer {
                participant,
                answer,
            } => {
                if let Some(conn) = self.conn_of(&participant) {
                    self.send(conn, signal_response::Message::Answer(answer));
                }
            }
            MediaEvent::SubscriberOffer { participant, offer } => {
                if let Some(conn) = self.conn_of(&participant) {
                    self.send(conn, signal_response::Message::Offer(offer));
                }
            }
            MediaEvent::Candidate {
                participant,
                target,
                candidate_init,
            } => {
                if let Some(conn) = self.conn_of(&participant) {
                    self.send(
                        conn,
                        signal_response::Message::Trickle(livekit_protocol::TrickleRequest {
                            candidate_init,
                            target: target.into(),
                            r#final: false,
                        }),
                    );
                }
            }
            MediaEvent::Connected { participant } => {
                let Some((room, _)) = self.room_and_conn_of(&participant) else {
                    return;
                };
                let info = self.participant_mut(&room, &participant).and_then(|p| {
                    (p.state != participant_info::State::Active).then(|| {
                        p.state = participant_info::State::Active;
                        p.bump();
                        (!p.hidden()).then(|| p.info())
                    })?
                });
                if let Some(info) = info {
                    self.broadcast_update(&room, &participant, info);
                }
            }
            MediaEvent::PublisherDisconnected { participant } => {
                // A client whose socket is gone resumes anyway, and that resume restarts ICE; a
                // `leave` kept for it would only make it resume twice. A client older than leave
                // actions would take it as "join again" and leave the call for a moment; it
                // restarts ICE itself once its connection fails.
                let asked = self
                    .reachable(&participant)
                    .filter(|p| p.protocol >= LEAVE_ACTIONS_SINCE)
                    .map(|p| p.conn);
                if let Some(conn) = asked {
                    tracing::info!(participant = %participant, "publisher connection quiet: asking for a resume");
                    self.send(
                        conn,
                        leave(
                            livekit_protocol::DisconnectReason::MediaFailure,
                            LeaveAction::Resume,
                        ),
                    );
                }
            }
            MediaEvent::ConnectionFailed { participant } => {
                // Any client takes the `leave` as "join again", older ones too; one whose socket
                // is gone joins again when its own connection fails.
                let conn = self.reachable(&participant).map(|p| p.conn);
                if let Some(conn) = conn {
                    tracing::info!(participant = %participant, "a peer connection failed: asking the client to join again");
                    self.send(
                        conn,
                        leave(
                            livekit_protocol::DisconnectReason::MediaFailure,
                            LeaveAction::Reconnect,
                        ),
                    );
                }
            }
            MediaEvent::NegotiationRefused { participant } => {
                self.negotiation_refused(now, &participant);
            }
            MediaEvent::TrackEnded { participant, track } => {
                tracing::info!(participant = %participant, %track, "track ended by its publisher");
                self.unpublish_track(now, &participant, &track);
            }
            MediaEvent::StreamStates {
                participant,
                states,
            } => {
                if let Some(conn) = self.conn_of(&participant) {
                    self.send(
                        conn,
                        signal_response::Message::StreamStateUpdate(
                            livekit_protocol::StreamStateUpdate {
                                stream_states: states,
                            },
                        ),
                    );
                }
            }
            MediaEvent::SpeakersChanged { room, speakers } => {
                let conns: Vec<ConnId> = self
                    .rooms
                    .get(&room)
                    .map(|r| r.participants.values().map(|p| p.conn).collect())
                    .unwrap_or_default();
                for conn in conns {
                    self.send(
                        conn,
                        signal_response::Message::SpeakersChanged(
                            livekit_protocol::SpeakersChanged {
                                speakers: speakers.clone(),
                            },
                        ),
                    );
                }
            }
        }
    }

    /// Time has passed: close the sockets of participants silent for their ping timeout (kept
    /// for a resume, as after a drop), remove those silent for [`RESUME_GRACE`] more, and close
    /// expired empty rooms.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.renew_tokens(now);
        self.send_held_changes(now);
        self.forget_refusals(now);
        let (timeout, gone) = (self.config.ping_timeout, self.removed_after());
        let mut silent = Vec::new();
        let mut half_open = Vec::new();
        for room in self.rooms.values() {
            for p in room.participants.values() {
                let quiet = now.saturating_duration_since(p.last_seen);
                if quiet > gone {
                    silent.push((room.name.clone(), p.sid.clone(), p.conn));
                } else if quiet > timeout && self.conns.contains_key(&p.conn) {
                    half_open.push((room.name.clone(), p.sid.clone(), p.conn));
                }
            }
        }
        for (room, sid, conn) in half_open {
            tracing::info!(%room, participant = %sid, %conn, "ping timeout: socket closed; kept for a resume");
            self.handle_disconnect(now, conn);
            self.out.push_back(Output::Close { conn });
        }
        for (room, sid, conn) in silent {
            tracing::info!(%room, participant = %sid, %conn, "ping timeout and no resume");
            self.remove_participant(
                now,
                &room,
                &sid,
                livekit_protocol::DisconnectReason::ConnectionTimeout,
            );
            self.out.push_back(Output::Close { conn });
        }
        let due: Vec<RoomName> = self
            .rooms
            .values()
            .filter(|r| {
                r.dynacast
                    .values()
                    .filter_map(Dynacast::poll_timeout)
                    .any(|at| at <= now)
            })
            .map(|r| r.name.clone())
            .collect();
        for room in due {
            self.refresh_dynacast(&room, now);
        }
        let empty_timeout = self.config.empty_timeout;
        self.rooms.retain(|name, room| {
            let keep = room
                .empty_since
                .is_none_or(|since| now.saturating_duration_since(since) < empty_timeout);
            if !keep {
                tracing::info!(room = %name, "empty room closed");
            }
            keep
        });
    }

    /// When [`Sfu::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pings = self
            .rooms
            .values()
            .flat_map(|r| r.participants.values())
            .map(|p| {
                let wait = if self.conns.contains_key(&p.conn) {
                    self.config.ping_timeout
                } else {
                    self.removed_after()
                };
                p.last_seen + wait
            });
        let rooms = self
            .rooms
            .values()
            .filter_map(|r| r.empty_since.map(|t| t + self.config.empty_timeout));
        let layers = self
            .rooms
            .values()
            .flat_map(|r| r.dynacast.values().filter_map(Dynacast::poll_timeout));
        let renewals = self
            .rooms
            .values()
            .flat_map(|r| r.participants.values())
            .filter_map(|p| p.renewal.as_ref().map(|(_, at)| *at));
        let held = self
            .rooms
            .values()
            .flat_map(|r| r.participants.values())
            .filter_map(|p| p.own_changes.due());
        pings
            .chain(rooms)
            .chain(layers)
            .chain(renewals)
            .chain(held)
            .min()
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Server-initiated unpublish (moderation, or the media engine saw the track end): the
    /// publisher gets `track_unpublished`, everyone else an update without the track.
    pub fn unpublish_track(&mut self, now: Instant, publisher: &ParticipantSid, track: &TrackSid) {
        let Some((room, conn)) = self.room_and_conn_of(publisher) else {
            return;
        };
        let info = self.participant_mut(&room, publisher).and_then(|p| {
            let before = p.tracks.len();
            p.tracks.retain(|t| t.sid != track.as_str());
            (p.tracks.len() != before).then(|| {
                p.bump();
                p.info()
            })
        });
        let Some(info) = info else {
            return;
        };
        self.send(
            conn,
            signal_response::Message::TrackUnpublished(TrackUnpublishedResponse {
                track_sid: track.to_string(),
            }),
        );
        self.drop_track(&room, publisher, track);
        // Paced as the publisher's own changes: its offer dropping a track it just published,
        // and again, would otherwise send the room its whole info twice a round.
        self.broadcast_own_change(now, &room, publisher, info);
    }

    // --- internals -------------------------------------------------------------------------

    #[expect(
        deprecated,
        reason = "LiveKit still fills the deprecated TrackInfo fields; clients before 2.x read them"
    )]
    fn add_track(
        &mut self,
        now: Instant,
        room: &RoomName,
        sid: &ParticipantSid,
        add: livekit_protocol::AddTrackRequest,
    ) {
        let track_sid = self.sids.track();
        let Some(p) = self.participant_mut(room, sid) else {
            return;
        };
        let source = add.source;
        let allowed_source = p.permission.can_publish_sources.is_empty()
            || p.permission.can_publish_sources.contains(&source);
        if !p.permission.can_publish || !allowed_source {
            tracing::info!(participant = %sid, "add_track refused: no permission");
            return;
        }
        if let Some(why) = oversized(&add) {
            tracing::info!(participant = %sid, why, "add_track refused: too large");
            return;
        }
        if p.tracks.len() >= MAX_TRACKS {
            tracing::info!(participant = %sid, "add_track refused: {MAX_TRACKS} tracks published");
            return;
        }
        if add.cid.is_empty() || p.cids.contains_key(&add.cid) {
            tracing::info!(participant = %sid, "add_track refused: empty or duplicate cid");
            return;
        }
        p.cids.insert(add.cid.clone(), track_sid.clone());
        let track_type = TrackType::try_from(add.r#type).unwrap_or(TrackType::Audio);
        let kind = if track_type == TrackType::Video {
            "video"
        } else {
            "audio"
        };
        // Only codecs the SFU negotiates and forwards: livekit-client publishes with the first
        // codec `track_published` names ("falling back to server selected codec"), so a codec
        // asked for that the SFU does not take (H.265, say) becomes the next one asked for, or
        // VP8. Named as asked, the answer would settle on another codec while the forwarders
        // waited for key frames of the one announced, for good.
        let mut codecs: Vec<SimulcastCodecInfo> = add
            .simulcast_codecs
            .iter()
            .filter(|c| !c.codec.is_empty())
            .map(|c| SimulcastCodecInfo {
                mime_type: mime(kind, &c.codec),
                cid: c.cid.clone(),
                layers: add.layers.clone(),
                ..SimulcastCodecInfo::default()
            })
            .filter(|c| forwarded(kind, &c.mime_type))
            .collect();
        if codecs.is_empty() {
            // Pin the codecs Element Call uses when the client leaves the choice to us.
            codecs.push(SimulcastCodecInfo {
                mime_type: if kind == "video" {
                    "video/VP8".to_owned()
                } else {
                    "audio/opus".to_owned()
                },
                cid: add.cid.clone(),
                layers: add.layers.clone(),
                ..SimulcastCodecInfo::default()
            });
        }
        let stream = if !add.stream.is_empty() {
            add.stream.clone()
        } else if matches!(
            TrackSource::try_from(source),
            Ok(TrackSource::ScreenShare | TrackSource::ScreenShareAudio)
        ) {
            "screen".to_owned()
        } else {
            "camera".to_owned()
        };
        let track = TrackInfo {
            sid: track_sid.to_string(),
            r#type: add.r#type,
            name: add.name.clone(),
            muted: add.muted,
            width: add.width,
            height: add.height,
            simulcast: add.layers.len() > 1,
            disable_dtx: add.disable_dtx,
            source,
            layers: add.layers.clone(),
            mime_type: codecs
                .first()
                .map(|c| c.mime_type.clone())
                .unwrap_or_default(),
            codecs,
            stereo: add.stereo,
            disable_red: add.disable_red,
            // E2EE receivers only decrypt when this is copied (spec §2.8, §5 item 6).
            encryption: add.encryption,
            // Receivers strip the trailer a publisher adds to each frame only when this says
            // it does (livekit-client's frame metadata; review helper-75).
            packet_trailer_features: add.packet_trailer_features.clone(),
            stream,
            audio_features: add.audio_features.clone(),
            backup_codec_policy: add.backup_codec_policy,
            ..TrackInfo::default()
        };
        p.tracks.push(track.clone());
        p.bump();
        let info = p.info();
        let conn = p.conn;
        tracing::info!(participant = %sid, track = %track_sid, "track published");
        if track_type == TrackType::Video
            && let Some(r) = self.rooms.get_mut(room)
        {
            r.dynacast.insert(track_sid.clone(), Dynacast::default());
        }
        self.media.track_published(sid, &add.cid, &track);
        self.send(
            conn,
            signal_response::Message::TrackPublished(TrackPublishedResponse {
                cid: add.cid,
                track: Some(track),
            }),
        );
        if !info.permission.as_ref().is_some_and(|p| p.hidden) {
            self.broadcast_own_change(now, room, sid, info);
        }
        let subscribers: Vec<ParticipantSid> = self
            .rooms
            .get(room)
            .map(|r| {
                r.participants
                    .values()
                    .filter(|s| &s.sid != sid && s.auto_subscribe && s.permission.can_subscribe)
                    .map(|s| s.sid.clone())
                    .collect()
            })
            .unwrap_or_default();
        for subscriber in subscribers {
            if self.subscribe(room, &subscriber, sid, track_sid.clone()) {
                self.media.needs_subscriber_offer(&subscriber);
            }
        }
    }

    /// Sends each participant whose renewal is due a fresh token for its reconnects.
    fn renew_tokens(&mut self, now: Instant) {
        let now_unix_secs = u64::try_from(self.unix_ms(now) / 1000).unwrap_or(0);
        let ttl_secs = self.config.token_ttl.as_secs();
        let interval = self.config.token_refresh_interval;
        let mut renewed = Vec::new();
        for p in self
            .rooms
            .values_mut()
            .flat_map(|r| r.participants.values_mut())
        {
            let Some((grant, at)) = p.renewal.as_mut() else {
                continue;
            };
            if *at > now {
                continue;
            }
            *at = now + interval;
            match grant.renewed(&self.keys, now_unix_secs, ttl_secs) {
                // One its resume would refuse is not sent: the client keeps the one it has. A
                // renewed token carries `nbf` and `iat`, which its join token may not have
                // (review helper-100).
                Some(token) if token.len() > crate::auth::MAX_TOKEN_BYTES => tracing::warn!(
                    participant = %p.sid,
                    "the renewed token would be larger than a resume takes: not sent"
                ),
                Some(token) => renewed.push((p.conn, token)),
                None => tracing::debug!(participant = %p.sid, "no key to renew the token with"),
            }
        }
        for (conn, token) in renewed {
            self.send(conn, signal_response::Message::RefreshToken(token));
        }
    }

    /// A subscriber's `subscription`: the tracks it names, directly or by participant.
    fn subscription(
        &mut self,
        room: &RoomName,
        sid: &ParticipantSid,
        update: livekit_protocol::UpdateSubscription,
    ) {
        let mut tracks: Vec<String> = update.track_sids;
        tracks.extend(
            update
                .participant_tracks
                .into_iter()
                .flat_map(|pt| pt.track_sids),
        );
        self.update_subscription(room, sid, &tracks, update.subscribe);
    }

    /// A subscriber's `track_setting`: each track of the room it names, paused or sized. The
    /// tracks whose setting kept changed (what their publishers are told may then change).
    fn track_setting(
        &mut self,
        room: &RoomName,
        sid: &ParticipantSid,
        setting: &livekit_protocol::UpdateTrackSettings,
    ) -> Vec<TrackSid> {
        let quality = livekit_protocol::VideoQuality::try_from(setting.quality).ok();
        let sized = setting.width > 0 || setting.height > 0;
        let settings = TrackSettings {
            // Without a size, quality OFF pauses the track, as in LiveKit.
            disabled: setting.disabled
                || (!sized && quality == Some(livekit_protocol::VideoQuality::Off)),
            width: setting.width,
            height: setting.height,
            fps: setting.fps,
            quality: quality.and_then(|q| Quality::try_from(q).ok()),
        };
        // Each track once: a frame naming one sid thousands of times would queue as
        // many changes for the media loop every room shares.
        let mut tracks: Vec<TrackSid> = setting
            .track_sids
            .iter()
            .filter_map(|t| TrackSid::parse(t))
            .collect();
        tracks.sort_unstable();
        tracks.dedup();
        // Settings are kept per track: only for tracks of the room, or a client naming made-up
        // sids would grow them without bound.
        if let Some(r) = self.rooms.get(room) {
            let owners = r.track_owners();
            tracks.retain(|t| owners.contains_key(t.as_str()));
        } else {
            tracks.clear();
        }
        let mut changed = Vec::new();
        for track in tracks {
            if let Some(p) = self.participant_mut(room, sid)
                && p.settings.insert(track.clone(), settings) != Some(settings)
            {
                changed.push(track.clone());
            }
            self.media.track_settings(sid, &track, settings);
        }
        changed
    }

    /// What livekit-client believes after a resume (`sync_state`), against what the server has.
    /// Applied: its subscriptions (`subscription`, as an `update_subscription` would be) and the
    /// tracks it switched off (`track_sids_disabled`: for audio it sends no `track_setting`
    /// again after a resume). A track of its own it still believes published that the server
    /// unpublished meanwhile is said unpublished again: that `track_unpublished` may have gone
    /// to the half-open socket it left (reviews helper-72 and helper-75). Its descriptions are
    /// not needed: the resume renegotiates both connections.
    fn sync_state(
        &mut self,
        room: &RoomName,
        sid: &ParticipantSid,
        conn: ConnId,
        sync: livekit_protocol::SyncState,
    ) {
        if let Some(update) = sync.subscription {
            self.subscription(room, sid, update);
        }
        if !sync.track_sids_disabled.is_empty() {
            let disabled = livekit_protocol::UpdateTrackSettings {
                track_sids: sync.track_sids_disabled,
                disabled: true,
                ..livekit_protocol::UpdateTrackSettings::default()
            };
            self.track_setting(room, sid, &disabled);
        }
        let Some(p) = self.participant_mut(room, sid) else {
            return;
        };
        let mut gone: Vec<String> = sync
            .publish_tracks
            .into_iter()
            .filter_map(|published| published.track.map(|t| t.sid))
            .filter(|track| !track.is_empty() && !p.tracks.iter().any(|t| t.sid == *track))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        // No more than it could have published, whatever the request names.
        gone.truncate(MAX_TRACKS);
        for track_sid in gone {
            tracing::info!(%room, participant = %sid, track = %track_sid, "a track unpublished while the socket was gone: said again");
            self.send(
                conn,
                signal_response::Message::TrackUnpublished(TrackUnpublishedResponse { track_sid }),
            );
        }
    }

    /// `sid`'s client asks to change its own name, metadata or attributes (livekit-client's
    /// `setName`, `setMetadata`, `setAttributes`). Each waits up to 5 s for the participant's own
    /// info to show the change, or for a refusal, and otherwise fails with a timeout (review
    /// helper-75). As in LiveKit: refused `NOT_ALLOWED` without `canUpdateOwnMetadata` in the
    /// grant, `LIMIT_EXCEEDED` past the sizes above; an empty name or metadata leaves it as it
    /// is (the client sends both every time), an attribute set to "" is removed. A change goes to
    /// everyone in the room, the participant too, and into the token it is sent next.
    fn update_metadata(
        &mut self,
        now: Instant,
        room: &RoomName,
        sid: &ParticipantSid,
        conn: ConnId,
        update: livekit_protocol::UpdateParticipantMetadata,
    ) {
        use livekit_protocol::request_response::Reason;
        let now_unix_secs = u64::try_from(self.unix_ms(now) / 1000).unwrap_or(0);
        let (keys, ttl_secs) = (&self.keys, self.config.token_ttl.as_secs());
        let Some(p) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(sid))
        else {
            return;
        };
        // What it would have: an empty name or metadata leaves it, an attribute set to "" goes.
        let pick =
            |asked: &String, has: &String| if asked.is_empty() { has } else { asked }.clone();
        let name = pick(&update.name, &p.name);
        let metadata = pick(&update.metadata, &p.metadata);
        let mut attributes = p.attributes.clone();
        for (key, value) in &update.attributes {
            if value.is_empty() {
                attributes.remove(key);
            } else {
                attributes.insert(key.clone(), value.clone());
            }
        }
        let attributes_bytes = bytes_of(&attributes);
        // The grant of the token it is sent next, as it would be: one its resume refuses must not
        // be minted.
        let grant = p.renewal.as_ref().map(|(grant, _)| JoinGrant {
            name: name.clone(),
            metadata: metadata.clone(),
            attributes: attributes.clone(),
            ..grant.clone()
        });
        let refused = if !p.permission.can_update_metadata {
            Some((
                Reason::NotAllowed,
                "does not have permission to update own metadata",
            ))
        } else if (name.len() > MAX_NAME_BYTES && name != p.name)
            || (metadata.len() > MAX_METADATA_BYTES && metadata != p.metadata)
            || (attributes_bytes > MAX_ATTRIBUTES_BYTES
                && attributes_bytes > bytes_of(&p.attributes))
            || grant.as_ref().is_some_and(|grant| {
                // A change that would stop its renewals. One whose renewed token is past the
                // limit already is sent none (`renew_tokens`), whatever it changes.
                let fits = |grant: &JoinGrant| {
                    grant
                        .renewed(keys, now_unix_secs, ttl_secs)
                        .is_none_or(|token| token.len() <= crate::auth::MAX_TOKEN_BYTES)
                };
                !fits(grant) && p.renewal.as_ref().is_some_and(|(kept, _)| fits(kept))
            })
        {
            Some((
                Reason::LimitExceeded,
                "name, metadata or attributes too large",
            ))
        } else {
            None
        };
        let changed = refused.is_none()
            && (name != p.name || metadata != p.metadata || attributes != p.attributes);
        if changed {
            (p.name, p.metadata, p.attributes) = (name, metadata, attributes);
            if let (Some((kept, at)), Some(grant)) = (p.renewal.as_mut(), grant) {
                *kept = grant;
                // A fresh token at the next tick: a rejoin with the one it has would set them
                // back.
                *at = now;
            }
            p.bump();
        }
        let info = changed.then(|| p.info());
        let (reason, message) = refused.unwrap_or((Reason::Ok, ""));
        if let Some((reason, _)) = refused {
            tracing::info!(%room, participant = %sid, reason = reason.as_str_name(), "metadata update refused");
        }
        if let Some(info) = info {
            self.send(
                conn,
                signal_response::Message::Update(ParticipantUpdate {
                    participants: vec![info.clone()],
                }),
            );
            self.broadcast_own_change(now, room, sid, info);
        }
        self.send(
            conn,
            signal_response::Message::RequestResponse(livekit_protocol::RequestResponse {
                request_id: update.request_id,
                reason: reason.into(),
                message: message.to_owned(),
                // Named back only with a refusal, and without what is past the limits: a request
                // may be as large as a frame, and a client that does not read would have each
                // copy queued for it.
                request: refused.map(|_| {
                    livekit_protocol::request_response::Request::UpdateMetadata(within_limits(
                        update,
                    ))
                }),
            }),
        );
    }

    /// Recomputes which layers of each video track in `room` anyone receives, and tells the
    /// publishers whose layers change (`subscribed_quality_update`; see [`dynacast`]).
    fn refresh_dynacast(&mut self, room: &RoomName, now: Instant) {
        self.refresh_dynacast_of(room, now, None);
    }

    /// [`refresh_dynacast`](Self::refresh_dynacast) for `only` these tracks, or all of them: a
    /// subscriber's setting changes what its tracks' publishers are told, not the room's.
    fn refresh_dynacast_of(&mut self, room: &RoomName, now: Instant, only: Option<&[TrackSid]>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let mut updates = Vec::new();
        for publisher in r.participants.values() {
            for track in &publisher.tracks {
                let Some(sid) = TrackSid::parse(&track.sid) else {
                    continue;
                };
                if only.is_some_and(|only| !only.contains(&sid)) {
                    continue;
                }
                let Some(state) = r.dynacast.get_mut(&sid) else {
                    continue;
                };
                let subscribers = r
                    .participants
                    .values()
                    .filter(|s| s.subscriptions.contains(&sid))
                    .map(|s| s.settings.get(&sid));
                if let Some(highest) = state.demand(dynacast::wanted(track, subscribers), now) {
                    updates.push((publisher.conn, dynacast::quality_update(track, highest)));
                }
            }
        }
        for (conn, update) in updates {
            self.send(
                conn,
                signal_response::Message::SubscribedQualityUpdate(update),
            );
        }
    }

    fn mute(
        &mut self,
        now: Instant,
        room: &RoomName,
        sid: &ParticipantSid,
        track: &str,
        muted: bool,
    ) {
        let Some(p) = self.participant_mut(room, sid) else {
            return;
        };
        let Some(t) = p.tracks.iter_mut().find(|t| t.sid == track) else {
            return;
        };
        if t.muted == muted {
            return;
        }
        t.muted = muted;
        let unmuted_video = (!muted && t.r#type == i32::from(TrackType::Video)).then(|| t.clone());
        if let Some(sid_of_track) = TrackSid::parse(&t.sid) {
            self.media.track_muted(sid, &sid_of_track, muted);
        }
        let Some(p) = self.participant_mut(room, sid) else {
            return;
        };
        p.bump();
        let info = p.info();
        let conn = p.conn;
        if !p.hidden() {
            self.broadcast_own_change(now, room, sid, info);
        }
        // An unmuted camera may come back on a restarted sender: say again which layers to send.
        let resend = unmuted_video.and_then(|track| {
            let sid = TrackSid::parse(&track.sid)?;
            let state = self.rooms.get(room)?.dynacast.get(&sid)?;
            Some(dynacast::quality_update(&track, state.current()))
        });
        if let Some(update) = resend {
            self.send(
                conn,
                signal_response::Message::SubscribedQualityUpdate(update),
            );
        }
    }

    /// `publisher`'s `update_audio_track`: livekit-client sends it when a published microphone's
    /// processing changes (its noise filter). The track's `audio_features` become the features
    /// named, each once, and `stereo` and `disable_dtx` follow them, as LiveKit keeps them; a
    /// change goes to the room in an update. A sid that is not one of its audio tracks is
    /// answered `NOT_FOUND` (LiveKit answers a sid it does not know so, and ignores one of a video
    /// track), more distinct features than [`MAX_AUDIO_FEATURES`] `LIMIT_EXCEEDED`: each update
    /// of the publisher copies them to every socket.
    #[expect(
        deprecated,
        reason = "LiveKit keeps the deprecated stereo and disable_dtx in step with the features"
    )]
    fn update_audio_track(
        &mut self,
        now: Instant,
        room: &RoomName,
        publisher: &ParticipantSid,
        conn: ConnId,
        mut update: livekit_protocol::UpdateLocalAudioTrack,
    ) {
        use livekit_protocol::AudioTrackFeature as Feature;
        use livekit_protocol::request_response::Reason;
        // Each distinct feature once, the walk ended past the limit: a frame holds tens of
        // thousands.
        let mut features: Vec<i32> = Vec::with_capacity(MAX_AUDIO_FEATURES);
        let mut too_many = false;
        for feature in &update.features {
            if features.contains(feature) {
                continue;
            }
            if features.len() == MAX_AUDIO_FEATURES {
                too_many = true;
                break;
            }
            features.push(*feature);
        }
        let track = TrackSid::parse(&update.track_sid);
        let Some(p) = self.participant_mut(room, publisher) else {
            return;
        };
        let found = p.tracks.iter_mut().find(|t| {
            t.r#type == i32::from(TrackType::Audio)
                && track.as_ref().is_some_and(|sid| t.sid == sid.as_str())
        });
        let refused = match found {
            None => Some(Reason::NotFound),
            Some(_) if too_many => Some(Reason::LimitExceeded),
            Some(t) => {
                let stereo = features.contains(&i32::from(Feature::TfStereo));
                let disable_dtx = features.contains(&i32::from(Feature::TfNoDtx));
                let asked = (features, stereo, disable_dtx);
                if (&t.audio_features, t.stereo, t.disable_dtx) != (&asked.0, asked.1, asked.2) {
                    (t.audio_features, t.stereo, t.disable_dtx) = asked;
                    p.bump();
                    let info = p.info();
                    if !p.hidden() {
                        self.broadcast_own_change(now, room, publisher, info);
                    }
                }
                None
            }
        };
        if let Some(reason) = refused {
            tracing::info!(%room, participant = %publisher, reason = reason.as_str_name(), "audio track update refused");
            // Named back cut to the limits: a refused request may be as large as a frame, and a
            // client that does not read would have each copy queued for it.
            update.features.truncate(MAX_AUDIO_FEATURES);
            update.track_sid = bounded(update.track_sid, MAX_TRACK_TEXT);
            self.send(
                conn,
                signal_response::Message::RequestResponse(livekit_protocol::RequestResponse {
                    reason: reason.into(),
                    request: Some(
                        livekit_protocol::request_response::Request::UpdateAudioTrack(update),
                    ),
                    ..livekit_protocol::RequestResponse::default()
                }),
            );
        }
    }

    /// `publisher`'s `subscription_permission`: who may receive its tracks from now on
    /// ([`crate::permission`]). Subscriptions it no longer allows are revoked (the track leaves
    /// the subscriber's connection; the publication stays), and those it refused before and now
    /// allows are made; each such subscriber is told (`subscription_permission_update`). A
    /// request naming no one or past the limits is logged and changes nothing (LiveKit answers
    /// none either). livekit-client sends its rule at every connect, "everyone" unless set.
    fn subscription_permission(
        &mut self,
        room: &RoomName,
        publisher: &ParticipantSid,
        request: &livekit_protocol::SubscriptionPermission,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let identity_of = |sid: &str| {
            ParticipantSid::parse(sid)
                .and_then(|sid| r.participants.get(&sid))
                .map(|p| p.identity.clone())
        };
        let Some(p) = r.participants.get(publisher) else {
            return;
        };
        // Only its tracks: every publish gets a fresh sid, so no other can ever be its.
        let tracks: Vec<TrackSid> = p
            .tracks
            .iter()
            .filter_map(|t| TrackSid::parse(&t.sid))
            .collect();
        let own_track = |track: &TrackSid| tracks.contains(track);
        let rule = match SubscribePermission::from_request(request, identity_of, own_track) {
            Ok(rule) => rule,
            Err(error) => {
                tracing::info!(%room, participant = %publisher, %error, "subscription permission refused");
                return;
            }
        };
        if p.subscribers_allowed == rule {
            return;
        }
        tracing::info!(%room, participant = %publisher, everyone = (rule == SubscribePermission::Everyone), "subscription permission set");
        // (subscriber, its connection, track, now allowed)
        let mut changes = Vec::new();
        for s in r.participants.values_mut().filter(|s| &s.sid != publisher) {
            for track in &tracks {
                let allowed = s.may_receive(&rule, track);
                if !allowed && s.subscriptions.remove(track) {
                    s.refused.insert(track.clone());
                } else if !(allowed && s.refused.contains(track)) {
                    continue;
                }
                s.told_permission = true;
                changes.push((s.sid.clone(), s.conn, track.clone(), allowed));
            }
        }
        if let Some(p) = r.participants.get_mut(publisher) {
            p.subscribers_allowed = rule;
        }
        let mut renegotiate = BTreeSet::new();
        for (subscriber, conn, track, allowed) in changes {
            if allowed {
                self.subscribe(room, &subscriber, publisher, track.clone());
            } else {
                self.media.unsubscribe(&subscriber, &track);
            }
            tracing::info!(%room, participant = %subscriber, %track, allowed, "subscription permission changed");
            self.send_permission(conn, publisher, &track, allowed);
            renegotiate.insert(subscriber);
        }
        for subscriber in renegotiate {
            self.media.needs_subscriber_offer(&subscriber);
        }
    }

    /// Tells the subscriber on `conn` whether `publisher` allows it `track`.
    fn send_permission(
        &mut self,
        conn: ConnId,
        publisher: &ParticipantSid,
        track: &TrackSid,
        allowed: bool,
    ) {
        self.send(
            conn,
            signal_response::Message::SubscriptionPermissionUpdate(
                livekit_protocol::SubscriptionPermissionUpdate {
                    participant_sid: publisher.as_str().to_owned(),
                    track_sid: track.as_str().to_owned(),
                    allowed,
                },
            ),
        );
    }

    fn update_subscription(
        &mut self,
        room: &RoomName,
        sid: &ParticipantSid,
        tracks: &[String],
        subscribe: bool,
    ) {
        let can_subscribe = self
            .participant_mut(room, sid)
            .is_some_and(|p| p.permission.can_subscribe);
        if subscribe && !can_subscribe {
            return;
        }
        let named: Vec<(TrackSid, ParticipantSid)> = match self.rooms.get(room) {
            Some(r) => {
                let owners = r.track_owners();
                tracks
                    .iter()
                    .filter_map(|t| TrackSid::parse(t))
                    .filter_map(|t| {
                        let publisher = *owners.get(t.as_str())?;
                        (publisher != sid).then(|| (t, publisher.clone()))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let mut changed = false;
        for (track, publisher) in named {
            if subscribe {
                changed |= self.subscribe(room, sid, &publisher, track);
            } else if let Some(p) = self.participant_mut(room, sid) {
                p.refused.remove(&track);
                if p.subscriptions.remove(&track) {
                    self.media.unsubscribe(sid, &track);
                    changed = true;
                }
            }
        }
        if changed {
            self.media.needs_subscriber_offer(sid);
        }
    }

    /// Adds one subscription; true if it is new. One the publisher does not allow the
    /// subscriber is kept as asked for ([`Participant::refused`]), and the subscriber is told
    /// (`subscription_permission_update`, naming the publisher) the first time.
    fn subscribe(
        &mut self,
        room: &RoomName,
        subscriber: &ParticipantSid,
        publisher: &ParticipantSid,
        track: TrackSid,
    ) -> bool {
        let allowed = self.rooms.get(room).is_some_and(|r| {
            let subscriber = r.participants.get(subscriber);
            r.participants
                .get(publisher)
                .zip(subscriber)
                .is_some_and(|(p, s)| s.may_receive(&p.subscribers_allowed, &track))
        });
        let Some(p) = self.participant_mut(room, subscriber) else {
            return false;
        };
        if !allowed {
            if !p.subscriptions.contains(&track) && p.refused.insert(track.clone()) {
                p.told_permission = true;
                let conn = p.conn;
                tracing::info!(%room, participant = %subscriber, %track, "subscription refused by the publisher's permission");
                self.send_permission(conn, publisher, &track, false);
            }
            return false;
        }
        p.refused.remove(&track);
        if !p.subscriptions.insert(track.clone()) {
            return false;
        }
        let settings = p.settings.get(&track).copied();
        self.media.subscribe(subscriber, publisher, &track);
        if let Some(settings) = settings {
            self.media.track_settings(subscriber, &track, settings);
        }
        true
    }

    /// Forgets `track` of `publisher` everywhere (subscriptions, media).
    fn drop_track(&mut self, room: &RoomName, publisher: &ParticipantSid, track: &TrackSid) {
        self.media.track_unpublished(publisher, track);
        let mut renegotiate = Vec::new();
        if let Some(r) = self.rooms.get_mut(room) {
            r.dynacast.remove(track);
            if let Some(p) = r.participants.get_mut(publisher) {
                // The client may publish the same track again (with the same cid).
                p.cids.retain(|_, published| published != track);
            }
            for p in r.participants.values_mut() {
                p.settings.remove(track);
                p.refused.remove(track);
                if p.subscriptions.remove(track) {
                    renegotiate.push(p.sid.clone());
                }
            }
        }
        for subscriber in renegotiate {
            self.media.unsubscribe(&subscriber, track);
            self.media.needs_subscriber_offer(&subscriber);
        }
    }

    fn remove_participant(
        &mut self,
        now: Instant,
        room_name: &RoomName,
        sid: &ParticipantSid,
        reason: livekit_protocol::DisconnectReason,
    ) {
        let Some(mut p) = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.participants.remove(sid))
        else {
            return;
        };
        self.conns.remove(&p.conn);
        self.dropped.remove(&p.conn);
        let (room_name, sid) = (room_name.clone(), sid.clone());
        for sub in &p.subscriptions {
            self.media.unsubscribe(&sid, sub);
        }
        let tracks: Vec<TrackSid> = p
            .tracks
            .iter()
            .filter_map(|t| TrackSid::parse(&t.sid))
            .collect();
        for track in &tracks {
            self.drop_track(&room_name, &sid, track);
        }
        self.media.participant_left(&sid);
        p.state = participant_info::State::Disconnected;
        p.tracks.clear();
        p.bump();
        let mut info = p.info();
        info.disconnect_reason = reason.into();
        if !p.hidden() {
            // A dropped participant stays at most `removed_after`: no resume looks back further.
            let kept_since = now.checked_sub(self.departures_kept() + self.removed_after());
            if let Some(room) = self.rooms.get_mut(&room_name) {
                let log = &mut room.departures;
                while log.len() >= MAX_DEPARTURES
                    || log
                        .front()
                        .is_some_and(|(at, _)| kept_since.is_some_and(|since| *at < since))
                {
                    log.pop_front();
                }
                log.push_back((
                    now,
                    ParticipantInfo {
                        sid: info.sid.clone(),
                        identity: info.identity.clone(),
                        state: info.state,
                        version: info.version,
                        disconnect_reason: info.disconnect_reason,
                        ..ParticipantInfo::default()
                    },
                ));
            }
            self.broadcast_update(&room_name, &sid, info);
        }
        if let Some(room) = self.rooms.get_mut(&room_name)
            && room.participants.is_empty()
        {
            room.empty_since = Some(now);
        }
        self.refresh_dynacast(&room_name, now);
    }

    /// How far before its client gave up on a socket a departure is said again on resume
    /// ([`Room::departures`]). livekit-client gives up when a pong is late by its ping timeout, so
    /// a departure older than that and one ping interval went out while pongs still came back,
    /// and has arrived; a resume that comes while the server still holds the old socket may
    /// follow the client's giving up by its retries' back-off ([`RESUME_BACKOFF`]).
    fn departures_kept(&self) -> Duration {
        self.config.ping_timeout + self.config.ping_interval + RESUME_BACKOFF
    }

    /// Silence after which a participant is removed: its ping timeout and [`RESUME_GRACE`].
    fn removed_after(&self) -> Duration {
        self.config.ping_timeout + RESUME_GRACE
    }

    /// Tells everyone in `room` but `about` of `about`'s `info`; nothing of a hidden participant,
    /// whose tracks' changes (an unpublish by the SFU) would otherwise announce it, and leave it
    /// with the others for good, since its departure is not told (review helper-71).
    /// [`broadcast_update`](Self::broadcast_update) for a change the participant asked for itself,
    /// paced ([`OwnChanges`]): past its burst, held and sent at a later timeout with its info
    /// then.
    fn broadcast_own_change(
        &mut self,
        now: Instant,
        room: &RoomName,
        about: &ParticipantSid,
        info: ParticipantInfo,
    ) {
        if self
            .participant_mut(room, about)
            .is_some_and(|p| p.own_changes.take(now))
        {
            self.broadcast_update(room, about, info);
        }
    }

    /// Sends the changes held ([`OwnChanges`]) that may go at `now`.
    fn send_held_changes(&mut self, now: Instant) {
        let due: Vec<(RoomName, ParticipantSid, ParticipantInfo)> = self
            .rooms
            .values_mut()
            .flat_map(|r| {
                let name = &r.name;
                r.participants.values_mut().filter_map(move |p| {
                    (p.own_changes.held && p.own_changes.take(now))
                        .then(|| (name.clone(), p.sid.clone(), p.info()))
                })
            })
            .collect();
        for (room, sid, info) in due {
            self.broadcast_update(&room, &sid, info);
        }
    }

    fn broadcast_update(&mut self, room: &RoomName, about: &ParticipantSid, info: ParticipantInfo) {
        // (One that left is told about too: its departure.)
        if let Some(p) = self.participant_mut(room, about) {
            // Its latest info goes now: nothing held is left to send.
            p.own_changes.held = false;
            if p.hidden() {
                return;
            }
        }
        let targets: Vec<ConnId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.participants
                    .values()
                    .filter(|p| &p.sid != about)
                    .map(|p| p.conn)
                    .collect()
            })
            .unwrap_or_default();
        for conn in targets {
            self.send(
                conn,
                signal_response::Message::Update(ParticipantUpdate {
                    participants: vec![info.clone()],
                }),
            );
        }
    }

    /// `participant`, if its signalling socket is up (it can be told something).
    fn reachable(&self, participant: &ParticipantSid) -> Option<&Participant> {
        self.rooms
            .values()
            .find_map(|r| r.participants.get(participant))
            .filter(|p| !self.dropped.contains_key(&p.conn))
    }

    fn send(&mut self, conn: ConnId, message: signal_response::Message) {
        if let Some((room, sid)) = self.dropped.get(&conn).cloned() {
            if let Some(outbox) = self
                .participant_mut(&room, &sid)
                .and_then(|p| p.outbox.as_mut())
            {
                outbox.keep(message);
            }
            return;
        }
        self.out.push_back(Output::Send {
            conn,
            message: Box::new(SignalResponse {
                message: Some(message),
            }),
        });
    }

    fn participant_mut(
        &mut self,
        room: &RoomName,
        sid: &ParticipantSid,
    ) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(sid)
    }

    fn server_info(&self) -> ServerInfo {
        ServerInfo {
            edition: 0,
            version: SERVER_VERSION.to_owned(),
            protocol: PROTOCOL_VERSION,
            node_id: self.config.node_id.clone(),
            ..ServerInfo::default()
        }
    }

    /// `sid`'s client sent a description the media engine refused. It is asked to join again
    /// (new connections, whose first negotiation has nothing left over to conflict with; kept
    /// for its resume if its socket is gone). If an earlier session of its identity in the room
    /// was refused within [`REFUSALS_REMEMBERED`], its session is ended with `MEDIA_FAILURE`
    /// instead: livekit-client then reports the call failed, where otherwise it would join
    /// again and offer the same every 15 s (its negotiation timeout), its camera reaching no one.
    fn negotiation_refused(&mut self, now: Instant, sid: &ParticipantSid) {
        let Some((room, conn, identity)) = self.rooms.values().find_map(|r| {
            let p = r.participants.get(sid)?;
            Some((r.name.clone(), p.conn, p.identity.clone()))
        }) else {
            return;
        };
        self.forget_refusals(now);
        let earlier = self
            .refusals
            .insert((room.clone(), identity), (sid.clone(), now))
            .is_some_and(|(refused, _)| refused != *sid);
        if !earlier {
            tracing::info!(%room, participant = %sid, "negotiation refused: asking the client to join again");
            self.send(
                conn,
                leave(
                    livekit_protocol::DisconnectReason::MediaFailure,
                    LeaveAction::Reconnect,
                ),
            );
            return;
        }
        tracing::warn!(%room, participant = %sid, "negotiation refused again after joining again: ending the session");
        // A dropped socket's connection has left `conns` for `dropped`.
        let live = self.conns.contains_key(&conn);
        if live {
            self.send(
                conn,
                leave(
                    livekit_protocol::DisconnectReason::MediaFailure,
                    LeaveAction::Disconnect,
                ),
            );
        }
        self.remove_participant(
            now,
            &room,
            sid,
            livekit_protocol::DisconnectReason::MediaFailure,
        );
        if live {
            self.out.push_back(Output::Close { conn });
        }
    }

    /// Drops the refusals older than [`REFUSALS_REMEMBERED`].
    fn forget_refusals(&mut self, now: Instant) {
        if !self.refusals.is_empty() {
            self.refusals
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < REFUSALS_REMEMBERED);
        }
    }

    /// The room of `sid` and its connection (which may have dropped).
    fn room_and_conn_of(&self, sid: &ParticipantSid) -> Option<(RoomName, ConnId)> {
        self.rooms
            .values()
            .find_map(|r| r.participants.get(sid).map(|p| (r.name.clone(), p.conn)))
    }

    fn conn_of(&self, sid: &ParticipantSid) -> Option<ConnId> {
        self.room_and_conn_of(sid).map(|(_, conn)| conn)
    }
}

/// The departures in `room` since `since` that a resuming client is told again: a departure sent
/// to a socket that was already dead (half-open, before the server saw it drop) is lost, and
/// the room's state alone does not say who left. Left out: those in `missed` (replayed from its
/// outbox anyway), and identities in the room now. livekit-client removes a DISCONNECTED
/// participant by identity, so one that came back under a new sid would vanish; the update about
/// everyone that follows gives it its new sid and tracks instead. A departure the client never
/// heard of, or one it already handled, changes nothing there.
fn departures_to_repeat(
    room: &Room,
    missed: &[signal_response::Message],
    since: Option<Instant>,
) -> Vec<ParticipantInfo> {
    let disconnected = participant_info::State::Disconnected as i32;
    let replayed: BTreeSet<&str> = missed
        .iter()
        .filter_map(|m| match m {
            signal_response::Message::Update(update) => Some(&update.participants),
            _ => None,
        })
        .flatten()
        .filter(|info| info.state == disconnected)
        .map(|info| info.sid.as_str())
        .collect();
    let present: BTreeSet<&str> = room
        .participants
        .values()
        .map(|p| p.identity.as_str())
        .collect();
    room.departures
        .iter()
        .filter(|(at, _)| since.is_none_or(|since| *at >= since))
        .map(|(_, info)| info)
        .filter(|info| {
            !replayed.contains(info.sid.as_str()) && !present.contains(info.identity.as_str())
        })
        .cloned()
        .collect()
}

/// A `leave` for `reason`: with [`LeaveAction::Reconnect`] the client joins again at once, with
/// [`LeaveAction::Resume`] it resumes its session on a new socket (restarting ICE), with
/// [`LeaveAction::Disconnect`] it is disconnected for good.
pub fn leave(
    reason: livekit_protocol::DisconnectReason,
    action: LeaveAction,
) -> signal_response::Message {
    signal_response::Message::Leave(LeaveRequest {
        can_reconnect: action != LeaveAction::Disconnect,
        reason: reason.into(),
        action: action.into(),
        regions: None,
    })
}

/// What clients are told to do: resume a dropped signalling connection (spec §2.11), which
/// [`Sfu::handle_resume`] serves.
fn client_configuration() -> ClientConfiguration {
    ClientConfiguration {
        resume_connection: livekit_protocol::ClientConfigSetting::Enabled.into(),
        ..ClientConfiguration::default()
    }
}

/// Whether the SFU negotiates and forwards `mime` on a track of `kind` (`audio` or `video`): the
/// codecs whose key frames and descriptors it reads (`forward::Codec`), which are those the
/// media engine registers.
fn forwarded(kind: &str, mime: &str) -> bool {
    Codec::from_mime(mime).is_some_and(|codec| {
        !matches!(codec, Codec::OtherAudio | Codec::OtherVideo)
            && codec.is_video() == (kind == "video")
    })
}

/// `vp8` → `video/VP8`, the spelling LiveKit uses in TrackInfo.
fn mime(kind: &str, codec: &str) -> String {
    let (kind, codec) = codec.split_once('/').unwrap_or((kind, codec));
    let codec = match codec.to_ascii_lowercase().as_str() {
        "vp8" => "VP8".to_owned(),
        "vp9" => "VP9".to_owned(),
        "h264" => "H264".to_owned(),
        "h265" => "H265".to_owned(),
        "av1" => "AV1".to_owned(),
        "opus" => "opus".to_owned(),
        "red" => "red".to_owned(),
        _ => codec.to_owned(),
    };
    format!("{}/{codec}", kind.to_ascii_lowercase())
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// What attributes weigh against [`MAX_ATTRIBUTES_BYTES`]: keys and values together.
fn bytes_of(attributes: &HashMap<String, String>) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// `text`, or nothing if it is longer than `limit` bytes: what a refusal names back.
fn bounded(text: String, limit: usize) -> String {
    if text.len() > limit {
        String::new()
    } else {
        text
    }
}

/// `update` without the texts past the limits ([`MAX_NAME_BYTES`], [`MAX_METADATA_BYTES`],
/// [`MAX_ATTRIBUTES_BYTES`]): what a refusal names back.
fn within_limits(
    mut update: livekit_protocol::UpdateParticipantMetadata,
) -> livekit_protocol::UpdateParticipantMetadata {
    update.name = bounded(update.name, MAX_NAME_BYTES);
    update.metadata = bounded(update.metadata, MAX_METADATA_BYTES);
    if bytes_of(&update.attributes) > MAX_ATTRIBUTES_BYTES {
        update.attributes.clear();
    }
    update
}

/// What makes `add` larger than a client ever needs, if anything. Every text it names that is
/// sent on to the room is bounded: a track's info goes to everyone at each update of its
/// publisher (a `mute` is one), so one client's long texts would be copied to every socket.
fn oversized(add: &livekit_protocol::AddTrackRequest) -> Option<&'static str> {
    if add.layers.len() > MAX_LAYERS {
        Some("layers")
    } else if add.simulcast_codecs.len() > MAX_CODECS {
        Some("simulcast codecs")
    } else if add.audio_features.len() > MAX_AUDIO_FEATURES {
        Some("audio features")
    } else if add.packet_trailer_features.len() > MAX_TRAILER_FEATURES {
        Some("packet trailer features")
    } else if [&add.cid, &add.name, &add.stream]
        .into_iter()
        .chain(add.simulcast_codecs.iter().flat_map(|c| [&c.codec, &c.cid]))
        .chain(add.layers.iter().map(|layer| &layer.rid))
        .any(|text| text.len() > MAX_TRACK_TEXT)
    {
        Some("text field")
    } else {
        None
    }
}

/// `canPublishSources` entries are lower-case names.
fn source_from_grant(name: &str) -> Option<TrackSource> {
    match name {
        "camera" => Some(TrackSource::Camera),
        "microphone" => Some(TrackSource::Microphone),
        "screen_share" => Some(TrackSource::ScreenShare),
        "screen_share_audio" => Some(TrackSource::ScreenShareAudio),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use livekit_protocol::{
        AddTrackRequest, MuteTrackRequest, Ping, SessionDescription, UpdateSubscription,
        UpdateTrackSettings,
    };

    use super::*;
    use crate::auth::VideoGrant;

    /// Records what the core asked of the media engine.
    #[derive(Debug, Default)]
    struct RecordingMedia {
        calls: Vec<String>,
        /// What [`MediaEngine::last_reliable_sequence`] answers, by participant.
        reliable_sequences: HashMap<ParticipantSid, u32>,
    }

    impl MediaEngine for RecordingMedia {
        fn participant_joined(&mut self, room: &RoomName, p: &ParticipantSid, _: &str, _: bool) {
            self.calls.push(format!("joined {room} {p}"));
        }
        fn participant_left(&mut self, p: &ParticipantSid) {
            self.calls.push(format!("left {p}"));
        }
        fn publisher_offer(&mut self, p: &ParticipantSid, offer: SessionDescription) {
            self.calls.push(format!("publisher_offer {p} {}", offer.id));
        }
        fn subscriber_answer(&mut self, p: &ParticipantSid, answer: SessionDescription) {
            self.calls
                .push(format!("subscriber_answer {p} {}", answer.id));
        }
        fn remote_candidate(&mut self, p: &ParticipantSid, target: SignalTarget, c: String) {
            self.calls
                .push(format!("candidate {p} {} {c}", target.as_str_name()));
        }
        fn track_published(&mut self, p: &ParticipantSid, _: &str, track: &TrackInfo) {
            self.calls
                .push(format!("track_published {p} {}", track.sid));
        }
        fn track_unpublished(&mut self, p: &ParticipantSid, track: &TrackSid) {
            self.calls.push(format!("track_unpublished {p} {track}"));
        }
        fn subscribe(&mut self, s: &ParticipantSid, p: &ParticipantSid, track: &TrackSid) {
            self.calls.push(format!("subscribe {s} {p} {track}"));
        }
        fn unsubscribe(&mut self, s: &ParticipantSid, track: &TrackSid) {
            self.calls.push(format!("unsubscribe {s} {track}"));
        }
        fn track_muted(&mut self, p: &ParticipantSid, track: &TrackSid, muted: bool) {
            self.calls.push(format!("muted {p} {track} {muted}"));
        }
        fn track_settings(&mut self, s: &ParticipantSid, track: &TrackSid, t: TrackSettings) {
            self.calls.push(format!(
                "settings {s} {track} {} {}x{}",
                t.disabled, t.width, t.height
            ));
        }
        fn needs_subscriber_offer(&mut self, p: &ParticipantSid) {
            self.calls.push(format!("needs_offer {p}"));
        }
        fn participant_resumed(&mut self, p: &ParticipantSid) {
            self.calls.push(format!("resumed {p}"));
        }
        fn last_reliable_sequence(&self, p: &ParticipantSid) -> u32 {
            self.reliable_sequences.get(p).copied().unwrap_or(0)
        }
    }

    struct World {
        sfu: Sfu<RecordingMedia>,
        now: Instant,
    }

    fn grant(identity: &str, room: &str) -> JoinGrant {
        JoinGrant {
            api_key: "key".to_owned(),
            identity: identity.to_owned(),
            name: identity.to_uppercase(),
            metadata: String::new(),
            attributes: HashMap::new(),
            video: VideoGrant {
                room_join: true,
                room: room.to_owned(),
                ..VideoGrant::default()
            },
        }
    }

    impl World {
        fn new() -> Self {
            let now = Instant::now();
            let config = SfuConfig {
                sid_seed: 7,
                ..SfuConfig::default()
            };
            let mut sfu = Sfu::new(config, RecordingMedia::default(), now, 1_800_000_000_000);
            sfu.create_room(now, RoomName::parse("room").unwrap());
            Self { sfu, now }
        }

        fn advance(&mut self, secs: u64) {
            self.now += Duration::from_secs(secs);
        }

        fn join(&mut self, identity: &str) -> (ConnId, JoinResponse) {
            self.join_with(identity, JoinOptions::default())
        }

        fn join_with(&mut self, identity: &str, options: JoinOptions) -> (ConnId, JoinResponse) {
            let conn = self
                .sfu
                .handle_join(self.now, grant(identity, "room"), options)
                .unwrap();
            let join = self
                .first_to(conn, |m| match m {
                    signal_response::Message::Join(j) => Some(j),
                    _ => None,
                })
                .expect("join response");
            (conn, join)
        }

        /// Joins with `grant` as it is (default options), nothing drained.
        fn join_granted(&mut self, grant: JoinGrant) -> ConnId {
            self.sfu
                .handle_join(self.now, grant, JoinOptions::default())
                .unwrap()
        }

        /// The first message sent to `conn` since the last drain that `pick` takes; the rest of
        /// what was sent is dropped.
        fn first_to<T>(
            &mut self,
            conn: ConnId,
            pick: impl Fn(signal_response::Message) -> Option<T>,
        ) -> Option<T> {
            self.drain()
                .into_iter()
                .filter(|(c, _)| *c == conn)
                .find_map(|(_, m)| pick(m))
        }

        fn resume(&mut self, identity: &str, sid: &str) -> Result<ConnId, JoinError> {
            self.sfu
                .handle_resume(self.now, &grant(identity, "room"), sid)
        }

        fn request(&mut self, conn: ConnId, message: signal_request::Message) {
            self.sfu.handle_request(
                self.now,
                conn,
                SignalRequest {
                    message: Some(message),
                },
            );
        }

        /// Sent messages; closes appear as `None` messages on a `(conn, Leave)`-free channel.
        fn drain(&mut self) -> Vec<(ConnId, signal_response::Message)> {
            sent_of(self.drain_all())
        }

        fn drain_all(&mut self) -> Vec<Output> {
            std::iter::from_fn(|| self.sfu.poll_output()).collect()
        }

        /// The track of the first `track_published` sent since the last drain (the rest of what
        /// was sent is dropped).
        fn published_track(&mut self) -> TrackInfo {
            self.drain()
                .into_iter()
                .find_map(|(_, m)| match m {
                    signal_response::Message::TrackPublished(t) => t.track,
                    _ => None,
                })
                .expect("a track published")
        }

        fn media_calls(&mut self) -> Vec<String> {
            std::mem::take(&mut self.sfu.media_mut().calls)
        }
    }

    /// The messages among `out`, with their connections (closes left out).
    fn sent_of(out: Vec<Output>) -> Vec<(ConnId, signal_response::Message)> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send { conn, message } => Some((conn, message.message.unwrap())),
                Output::Close { .. } => None,
            })
            .collect()
    }

    fn updates_for(
        sent: &[(ConnId, signal_response::Message)],
        conn: ConnId,
    ) -> Vec<ParticipantInfo> {
        sent.iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, m)| match m {
                signal_response::Message::Update(u) => Some(u.participants.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn add_video(cid: &str) -> signal_request::Message {
        signal_request::Message::AddTrack(video_request(cid))
    }

    /// A microphone's `add_track`.
    fn microphone_request(cid: &str) -> AddTrackRequest {
        AddTrackRequest {
            cid: cid.to_owned(),
            name: "microphone".to_owned(),
            r#type: TrackType::Audio.into(),
            source: TrackSource::Microphone.into(),
            ..AddTrackRequest::default()
        }
    }

    /// A camera's `add_track` as livekit-client sends it, VP8 asked for.
    fn video_request(cid: &str) -> AddTrackRequest {
        AddTrackRequest {
            cid: cid.to_owned(),
            name: "camera".to_owned(),
            r#type: TrackType::Video.into(),
            source: TrackSource::Camera.into(),
            width: 1280,
            height: 720,
            encryption: livekit_protocol::encryption::Type::Gcm.into(),
            simulcast_codecs: vec![livekit_protocol::SimulcastCodec {
                codec: "vp8".to_owned(),
                cid: cid.to_owned(),
                ..Default::default()
            }],
            ..AddTrackRequest::default()
        }
    }

    /// A camera asked for in codecs the SFU does not forward is confirmed in the next codec
    /// asked for that it does, or in VP8: livekit-client publishes with the first codec
    /// `track_published` names. Codecs it forwards are kept as asked, backup and all.
    #[test]
    fn a_codec_the_sfu_does_not_forward_is_published_as_one_it_does() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let mut published = |cid: &str, asked: &[&str]| -> Vec<String> {
            let mut add = video_request(cid);
            add.simulcast_codecs = asked
                .iter()
                .enumerate()
                .map(|(i, codec)| livekit_protocol::SimulcastCodec {
                    codec: (*codec).to_owned(),
                    cid: if i == 0 {
                        cid.to_owned()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                })
                .collect();
            w.request(alice, signal_request::Message::AddTrack(add));
            let track = w.published_track();
            assert_eq!(
                Some(&track.mime_type),
                track.codecs.first().map(|c| &c.mime_type)
            );
            track.codecs.into_iter().map(|c| c.mime_type).collect()
        };
        assert_eq!(published("a", &["h265"]), ["video/VP8"]);
        assert_eq!(published("b", &["h265", "vp9"]), ["video/VP9"]);
        assert_eq!(published("c", &["av1", "vp8"]), ["video/AV1", "video/VP8"]);
        assert_eq!(
            published("d", &["opus"]),
            ["video/VP8"],
            "an audio codec on a camera"
        );
    }

    #[test]
    fn debug_output_leaves_out_turn_credentials_and_tokens() {
        let send = |message| Output::Send {
            conn: ConnId(1),
            message: Box::new(SignalResponse {
                message: Some(message),
            }),
        };
        let turn = livekit_protocol::IceServer {
            urls: vec!["turns:turn.clinic.example:443".to_owned()],
            username: "turn-user".to_owned(),
            credential: "turn-credential-xyz".to_owned(),
        };
        let join = send(signal_response::Message::Join(JoinResponse {
            ice_servers: vec![turn.clone()],
            ..JoinResponse::default()
        }));
        let refresh = send(signal_response::Message::RefreshToken(
            "eyJ.secret.jwt".to_owned(),
        ));
        let pong = send(signal_response::Message::Pong(42));
        let shown = format!("{join:?} {refresh:?} {pong:?}");
        assert!(!shown.contains("turn-credential-xyz"), "{shown}");
        assert!(!shown.contains("eyJ.secret.jwt"), "{shown}");
        assert!(
            shown.contains("Join(..)") && shown.contains("Pong(42)"),
            "{shown}"
        );

        let config = SfuConfig {
            ice_servers: vec![turn],
            ..SfuConfig::default()
        };
        let sfu = Sfu::new(config, RecordingMedia::default(), Instant::now(), 0);
        let shown = format!("{sfu:?}");
        assert!(shown.contains("turn.clinic.example"), "{shown}");
        assert!(!shown.contains("turn-credential-xyz"), "{shown}");
    }

    #[test]
    fn join_response_carries_what_livekit_client_needs() {
        let mut w = World::new();
        let (_, alice) = w.join("alice");
        let room = alice.room.unwrap();
        assert!(room.sid.starts_with("RM_"));
        assert_eq!(room.name, "room");
        let me = alice.participant.unwrap();
        assert!(me.sid.starts_with("PA_"));
        assert_eq!(me.identity, "alice");
        assert_eq!(me.state, participant_info::State::Joined as i32);
        assert!(me.permission.unwrap().can_publish);
        assert!(alice.other_participants.is_empty());
        assert_eq!(alice.server_version, SERVER_VERSION);
        assert_eq!(alice.server_info.unwrap().version, SERVER_VERSION);
        assert_eq!((alice.ping_interval, alice.ping_timeout), (5, 15));
        assert!(alice.subscriber_primary);
        assert_eq!(
            alice.client_configuration.unwrap().resume_connection,
            livekit_protocol::ClientConfigSetting::Enabled as i32
        );
        let calls = w.media_calls();
        assert!(calls[0].starts_with("joined room PA_"));
        assert!(calls[1].starts_with("needs_offer PA_"));
    }

    #[test]
    fn unknown_room_is_refused_unless_the_token_may_create_it() {
        let mut w = World::new();
        let refused = w
            .sfu
            .handle_join(w.now, grant("a", "nowhere"), JoinOptions::default());
        assert_eq!(refused, Err(JoinError::RoomNotFound));
        assert_eq!(
            JoinError::RoomNotFound.to_string(),
            "requested room does not exist"
        );
        assert!(w.drain_all().is_empty());
        assert!(w.media_calls().is_empty());
        assert!(!w.sfu.has_room(&RoomName::parse("nowhere").unwrap()));

        let mut creator = grant("a", "nowhere");
        creator.video.room_create = true;
        w.sfu
            .handle_join(w.now, creator, JoinOptions::default())
            .unwrap();
        assert!(w.sfu.has_room(&RoomName::parse("nowhere").unwrap()));
    }

    #[test]
    fn two_participants_see_each_other_publish_subscribe_and_mute() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        w.advance(1);
        let (bob, bob_join) = w.join("bob");
        assert_eq!(bob_join.other_participants.len(), 1);
        assert_eq!(bob_join.other_participants[0].identity, "alice");
        let bob_sid = bob_join.participant.unwrap().sid;
        // Alice was told about Bob by the join (drained in `join`); check via a fresh join below.
        w.media_calls();

        w.request(alice, add_video("cam-1"));
        let sent = w.drain();
        let published = sent
            .iter()
            .find_map(|(c, m)| match m {
                signal_response::Message::TrackPublished(t) if *c == alice => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(published.cid, "cam-1");
        let track = published.track.unwrap();
        assert!(track.sid.starts_with("TR_"));
        assert_eq!(
            track.encryption,
            livekit_protocol::encryption::Type::Gcm as i32
        );
        assert_eq!(track.codecs[0].mime_type, "video/VP8");
        assert_eq!(mime("audio", "Opus"), "audio/opus");
        assert!(forwarded("video", "video/AV1") && forwarded("audio", "audio/opus"));
        assert!(!forwarded("video", "video/H265") && !forwarded("audio", "audio/red"));
        assert!(
            !forwarded("audio", "video/VP8"),
            "a video codec on an audio track"
        );
        assert_eq!(track.stream, "camera");
        let to_bob = updates_for(&sent, bob);
        assert_eq!(to_bob.len(), 1);
        assert_eq!(to_bob[0].tracks.len(), 1);
        assert!(to_bob[0].is_publisher);
        let v_published = to_bob[0].version;
        assert!(updates_for(&sent, alice).is_empty());
        let calls = w.media_calls();
        assert!(calls.contains(&format!(
            "subscribe {bob_sid} {} {}",
            to_bob[0].sid, track.sid
        )));
        assert!(calls.contains(&format!("needs_offer {bob_sid}")));

        // Duplicate cid is refused.
        w.request(alice, add_video("cam-1"));
        assert!(w.drain().is_empty());

        // Mute: Bob sees the full track list, muted, with a higher version.
        w.request(
            alice,
            signal_request::Message::Mute(MuteTrackRequest {
                sid: track.sid.clone(),
                muted: true,
            }),
        );
        let sent = w.drain();
        let to_bob = updates_for(&sent, bob);
        assert_eq!(to_bob.len(), 1);
        assert!(to_bob[0].tracks[0].muted);
        assert!(to_bob[0].version > v_published);
        // The engine stops forwarding it.
        assert_eq!(
            w.media_calls(),
            vec![format!("muted {} {} true", to_bob[0].sid, track.sid)]
        );

        // Track settings are remembered per subscriber and passed on.
        w.request(
            bob,
            signal_request::Message::TrackSetting(UpdateTrackSettings {
                track_sids: vec![track.sid.clone()],
                disabled: false,
                width: 320,
                height: 180,
                ..UpdateTrackSettings::default()
            }),
        );
        assert_eq!(
            w.media_calls(),
            vec![format!("settings {bob_sid} {} false 320x180", track.sid)]
        );

        // Unsubscribe and resubscribe.
        w.request(
            bob,
            signal_request::Message::Subscription(UpdateSubscription {
                track_sids: vec![track.sid.clone()],
                subscribe: false,
                participant_tracks: vec![],
            }),
        );
        assert_eq!(
            w.media_calls(),
            vec![
                format!("unsubscribe {bob_sid} {}", track.sid),
                format!("needs_offer {bob_sid}")
            ]
        );
        w.request(
            bob,
            signal_request::Message::Subscription(UpdateSubscription {
                track_sids: vec![track.sid.clone()],
                subscribe: true,
                participant_tracks: vec![],
            }),
        );
        let calls = w.media_calls();
        assert!(calls[0].starts_with(&format!("subscribe {bob_sid}")));
        // The remembered settings follow the new subscription.
        assert_eq!(
            calls[1],
            format!("settings {bob_sid} {} false 320x180", track.sid)
        );
    }

    /// No track is both received and refused, and only tracks of the room are refused.
    fn refusals_hold(w: &World) {
        for room in w.sfu.rooms.values() {
            for p in room.participants.values() {
                assert!(p.subscriptions.is_disjoint(&p.refused), "{}", p.sid);
                assert!(
                    p.refused
                        .iter()
                        .all(|t| room.track_owners().contains_key(t.as_str())),
                    "{}",
                    p.sid
                );
            }
        }
    }

    /// Alice restricts who receives her tracks (`subscription_permission`): subscriptions she
    /// no longer allows are revoked, those she refused are made once she allows them, and each
    /// subscriber is told once per change, naming her and the track. The rule names identities
    /// (Bob's by his sid here), so it holds for Bob when he joins again; "everyone", which every
    /// livekit-client sends at connect, changes nothing by default.
    #[test]
    fn a_publishers_subscription_permission_refuses_revokes_and_grants() {
        use livekit_protocol::{SubscriptionPermission, TrackPermission};
        use signal_request::Message as Request;
        let mut w = World::new();
        let (alice, alice_join) = w.join("alice");
        let alice_sid = alice_join.participant.unwrap().sid;
        let (bob, bob_join) = w.join("bob");
        let bob_sid = bob_join.participant.unwrap().sid;
        let (carol, carol_join) = w.join("carol");
        let carol_sid = carol_join.participant.unwrap().sid;
        w.request(alice, add_video("cam-1"));
        let cam = w.published_track().sid;
        w.request(alice, Request::AddTrack(microphone_request("mic-1")));
        let mic = w.published_track().sid;
        w.media_calls();
        let entry = |identity: &str, sid: &str, tracks: &[&String]| TrackPermission {
            participant_identity: identity.to_owned(),
            participant_sid: sid.to_owned(),
            all_tracks: tracks.is_empty(),
            track_sids: tracks.iter().map(|t| (*t).clone()).collect(),
        };
        let rule = |all: bool, entries: Vec<TrackPermission>| {
            Request::SubscriptionPermission(SubscriptionPermission {
                all_participants: all,
                track_permissions: entries,
            })
        };
        // What each connection was told, as (track, allowed), and whether it named Alice.
        let told = |w: &mut World| {
            refusals_hold(w);
            let mut told: Vec<(ConnId, String, bool)> = w
                .drain()
                .into_iter()
                .filter_map(|(c, m)| match m {
                    signal_response::Message::SubscriptionPermissionUpdate(u) => {
                        assert_eq!(u.participant_sid, alice_sid, "names the publisher");
                        Some((c, u.track_sid, u.allowed))
                    }
                    _ => None,
                })
                .collect();
            told.sort();
            told
        };
        let subscribed = |calls: &[String], who: &str, track: &str| {
            calls.contains(&format!("subscribe {who} {alice_sid} {track}"))
        };
        let unsubscribed = |calls: &[String], who: &str, track: &str| {
            calls.contains(&format!("unsubscribe {who} {track}"))
        };

        // "Everyone", as every client sends at connect: nothing changes.
        w.request(alice, rule(true, vec![]));
        assert!(w.drain().is_empty());
        assert!(w.media_calls().is_empty());

        // Carol every track; Bob, named by his sid, the microphone only.
        w.request(
            alice,
            rule(
                false,
                vec![entry("carol", "", &[]), entry("", &bob_sid, &[&mic])],
            ),
        );
        assert_eq!(told(&mut w), [(bob, cam.clone(), false)]);
        let calls = w.media_calls();
        assert!(unsubscribed(&calls, &bob_sid, &cam), "{calls:?}");
        assert!(
            calls.contains(&format!("needs_offer {bob_sid}")),
            "{calls:?}"
        );
        assert!(!calls.iter().any(|c| c.contains(&carol_sid)), "{calls:?}");

        // Bob asks for the camera again (as his `sync_state` would): refused, not told twice.
        let ask = |subscribe| {
            Request::Subscription(UpdateSubscription {
                track_sids: vec![cam.clone()],
                subscribe,
                ..UpdateSubscription::default()
            })
        };
        w.request(bob, ask(true));
        assert_eq!(told(&mut w), []);
        assert!(!subscribed(&w.media_calls(), &bob_sid, &cam));

        // A track she publishes now follows the rule: Carol gets it, Bob is told he may not.
        w.request(alice, add_video("share-1"));
        let sent = w.drain();
        let share = sent
            .iter()
            .find_map(|(_, m)| match m {
                signal_response::Message::TrackPublished(t) => t.track.clone(),
                _ => None,
            })
            .unwrap()
            .sid;
        let to_bob: Vec<_> = sent
            .iter()
            .filter(|(c, _)| *c == bob)
            .filter_map(|(_, m)| match m {
                signal_response::Message::SubscriptionPermissionUpdate(u) => {
                    Some((u.track_sid.clone(), u.allowed))
                }
                _ => None,
            })
            .collect();
        assert_eq!(to_bob, [(share.clone(), false)]);
        let calls = w.media_calls();
        assert!(subscribed(&calls, &carol_sid, &share) && !subscribed(&calls, &bob_sid, &share));

        // Everyone again: Bob gets the camera and the share, and is told.
        w.request(alice, rule(true, vec![]));
        let mut expected = vec![(bob, cam.clone(), true), (bob, share.clone(), true)];
        expected.sort();
        assert_eq!(told(&mut w), expected);
        let calls = w.media_calls();
        assert!(subscribed(&calls, &bob_sid, &cam) && subscribed(&calls, &bob_sid, &share));

        // No one: all three revoked for both. Bob then drops the camera himself; when Alice
        // allows everyone again he gets back only what he still asks for.
        w.request(alice, rule(false, vec![]));
        let mut expected: Vec<(ConnId, String, bool)> = [bob, carol]
            .into_iter()
            .flat_map(|c| [&cam, &mic, &share].map(|t| (c, t.clone(), false)))
            .collect();
        expected.sort();
        assert_eq!(told(&mut w), expected);
        w.request(bob, ask(false));
        w.media_calls();
        w.request(alice, rule(true, vec![]));
        let mut expected: Vec<(ConnId, String, bool)> = [(bob, &mic), (bob, &share)]
            .into_iter()
            .chain([&cam, &mic, &share].map(|t| (carol, t)))
            .map(|(c, t)| (c, t.clone(), true))
            .collect();
        expected.sort();
        assert_eq!(told(&mut w), expected);
        assert!(!subscribed(&w.media_calls(), &bob_sid, &cam));

        // Carol alone, then Bob's socket drops and Alice allows him everything meanwhile: what
        // went to the dead socket is not kept, and his resume tells him where each track stands.
        w.request(alice, rule(false, vec![entry("carol", "", &[])]));
        w.drain();
        w.sfu.handle_disconnect(w.now, bob);
        w.request(alice, rule(true, vec![]));
        w.request(
            alice,
            rule(
                false,
                vec![entry("carol", "", &[]), entry("bob", "", &[&mic])],
            ),
        );
        let bob = w.resume("bob", &bob_sid).unwrap();
        let mut expected = vec![(bob, mic.clone(), true), (bob, share.clone(), false)];
        expected.sort();
        assert_eq!(told(&mut w), expected);

        // A recorder receives every track whatever the rule.
        let mut recorder = grant("egress", "room");
        recorder.video.recorder = true;
        let egress = w.join_granted(recorder);
        assert_eq!(told(&mut w), []);
        let calls = w.media_calls();
        let egress_sid = w.sfu.conns[&egress].1.clone();
        for track in [&cam, &mic, &share] {
            assert!(subscribed(&calls, egress_sid.as_str(), track), "{calls:?}");
        }

        // Alice unpublishes her share, refused to Bob: nothing is left of it.
        let share_sid = TrackSid::parse(&share).unwrap();
        w.sfu.unpublish_track(
            w.now,
            &ParticipantSid::parse(&alice_sid).unwrap(),
            &share_sid,
        );
        refusals_hold(&w);
        w.drain();
        w.media_calls();

        // A request naming no one is refused whole: the rule stays.
        w.request(alice, rule(false, vec![entry("", "", &[])]));
        assert!(w.drain().is_empty());
        assert!(w.media_calls().is_empty());

        // The rule names identities: Bob joining again under a new sid is still refused.
        w.request(alice, rule(false, vec![entry("carol", "", &[])]));
        w.drain();
        w.request(bob, Request::Leave(LeaveRequest::default()));
        w.drain();
        let bob_again = w.join_granted(grant("bob", "room"));
        let mut expected: Vec<(ConnId, String, bool)> =
            [&cam, &mic].map(|t| (bob_again, t.clone(), false)).into();
        expected.sort();
        assert_eq!(told(&mut w), expected);
    }

    #[test]
    fn late_joiner_gets_existing_tracks_and_auto_subscribes() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        w.request(alice, add_video("cam"));
        w.drain();
        w.media_calls();
        let (_, carol) = w.join("carol");
        assert_eq!(carol.other_participants[0].tracks.len(), 1);
        let calls = w.media_calls();
        assert!(calls.iter().any(|c| c.starts_with("subscribe ")));
        assert!(calls.last().unwrap().starts_with("needs_offer "));
    }

    #[test]
    fn pings_are_answered_with_the_request_timestamp() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        w.advance(2);
        w.request(
            alice,
            signal_request::Message::PingReq(Ping {
                timestamp: 1234,
                rtt: 10,
            }),
        );
        w.request(alice, signal_request::Message::Ping(1234));
        let sent = w.drain();
        assert_eq!(
            sent[0].1,
            signal_response::Message::PongResp(Pong {
                last_ping_timestamp: 1234,
                timestamp: 1_800_000_002_000,
            })
        );
        assert_eq!(sent[1].1, signal_response::Message::Pong(1_800_000_002_000));
    }

    #[test]
    fn leave_and_disconnect_tell_the_others_with_tracks_removed() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        let (carol, _) = w.join("carol");
        w.request(alice, add_video("cam"));
        w.drain();
        w.media_calls();

        w.request(
            alice,
            signal_request::Message::Leave(LeaveRequest::default()),
        );
        let out = w.drain_all();
        assert!(out.contains(&Output::Close { conn: alice }));
        let sent = sent_of(out);
        for other in [bob, carol] {
            let update = &updates_for(&sent, other)[0];
            assert_eq!(update.state, participant_info::State::Disconnected as i32);
            assert_eq!(
                update.disconnect_reason,
                livekit_protocol::DisconnectReason::ClientInitiated as i32
            );
            assert!(update.tracks.is_empty());
        }
        let calls = w.media_calls();
        assert!(calls.iter().any(|c| c.starts_with("track_unpublished ")));
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("unsubscribe "))
                .count(),
            2
        );

        // A dropped socket: nothing yet, for the client may resume; a second drop is a no-op,
        // and requests on a closed connection are ignored.
        w.sfu.handle_disconnect(w.now, bob);
        w.sfu.handle_disconnect(w.now, bob);
        w.request(bob, signal_request::Message::Ping(1));
        assert!(w.drain_all().is_empty());
        // Once its ping timeout and the grace for a resume pass, the others see it gone.
        for _ in 0..7 {
            w.advance(4);
            w.request(carol, signal_request::Message::Ping(1));
            w.sfu.handle_timeout(w.now);
        }
        let sent = w.drain();
        let update = &updates_for(&sent, carol)[0];
        assert_eq!(update.state, participant_info::State::Disconnected as i32);
        assert_eq!(
            update.disconnect_reason,
            livekit_protocol::DisconnectReason::ConnectionTimeout as i32
        );
        assert!(w.media_calls().iter().any(|c| c.starts_with("left ")));
    }

    /// The engine hears nothing at the address Alice's publisher PC sends to: she is asked to
    /// resume (the one way to make her client restart that PC's ICE) and keeps her session; the
    /// others hear nothing of it. With her socket gone she is told nothing, now or on her resume;
    /// nor is a client too old for leave actions.
    #[test]
    fn a_quiet_publisher_connection_asks_its_client_to_resume() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        let (bob, _) = w.join("bob");
        w.drain();
        w.media_calls();

        w.sfu.handle_media_event(
            w.now,
            MediaEvent::PublisherDisconnected {
                participant: alice_sid.clone(),
            },
        );
        let resume = leave(
            livekit_protocol::DisconnectReason::MediaFailure,
            LeaveAction::Resume,
        );
        assert_eq!(
            w.drain_all(),
            vec![Output::Send {
                conn: alice,
                message: Box::new(SignalResponse {
                    message: Some(resume.clone()),
                }),
            }]
        );
        let signal_response::Message::Leave(sent) = &resume else {
            unreachable!()
        };
        assert!(sent.can_reconnect);
        assert_eq!(w.media_calls(), Vec::<String>::new(), "her media stays");
        let resumed = w.resume("alice", alice_sid.as_str()).unwrap();
        let sent = w.drain();
        assert!(
            sent.iter().all(|(c, _)| *c != bob),
            "bob is told nothing: {sent:?}"
        );
        assert!(
            matches!(sent.first(), Some((c, signal_response::Message::Reconnect(_))) if *c == resumed)
        );

        // Her socket drops; the engine reports the same before she resumes.
        w.sfu.handle_disconnect(w.now, resumed);
        w.drain();
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::PublisherDisconnected {
                participant: alice_sid.clone(),
            },
        );
        assert_eq!(w.drain_all(), vec![]);
        let again = w.resume("alice", alice_sid.as_str()).unwrap();
        let sent = w.drain();
        assert!(
            !sent.iter().any(|(c, m)| *c == again && *m == resume),
            "no leave kept for her: {sent:?}"
        );

        // A client older than leave actions would read it as "join again": it is told nothing.
        let (_, old) = w.join_with(
            "carol",
            JoinOptions {
                protocol: LEAVE_ACTIONS_SINCE - 1,
                ..JoinOptions::default()
            },
        );
        let carol = old.participant.expect("carol joined").sid;
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::PublisherDisconnected {
                participant: ParticipantSid::parse(&carol).unwrap(),
            },
        );
        assert_eq!(w.drain_all(), vec![]);
    }

    /// A peer connection whose DTLS handshake failed cannot be mended by a resume: the client is
    /// asked to join again (a client too old for leave actions reads any `leave` so), unless its
    /// socket is gone. Nobody else hears of it.
    #[test]
    fn a_failed_connection_asks_its_client_to_join_again() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        let (_bob, _) = w.join("bob");
        w.drain();
        w.media_calls();
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::ConnectionFailed {
                participant: alice_sid.clone(),
            },
        );
        let rejoin = leave(
            livekit_protocol::DisconnectReason::MediaFailure,
            LeaveAction::Reconnect,
        );
        assert_eq!(
            w.drain_all(),
            vec![Output::Send {
                conn: alice,
                message: Box::new(SignalResponse {
                    message: Some(rejoin),
                }),
            }]
        );
        assert_eq!(
            w.media_calls(),
            Vec::<String>::new(),
            "her media stays until she goes"
        );
        // With her socket gone she is told nothing.
        w.sfu.handle_disconnect(w.now, alice);
        w.drain();
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::ConnectionFailed {
                participant: alice_sid,
            },
        );
        assert_eq!(w.drain_all(), vec![]);
    }

    /// A refused negotiation asks the client to join again, as often as its session is refused.
    /// Refused again in the session it joined with within [`REFUSALS_REMEMBERED`], its session
    /// is ended with `MEDIA_FAILURE`, the room told. Another identity, or the same one once that
    /// time has passed, is asked to join again; a client whose socket is gone is told on its
    /// resume.
    #[test]
    fn a_negotiation_refused_asks_for_a_rejoin_and_refused_again_after_it_ends_the_session() {
        let mut w = World::new();
        let sid_of =
            |join: JoinResponse| ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        let (alice, join) = w.join("alice");
        let alice_sid = sid_of(join);
        let (bob, join) = w.join("bob");
        let bob_sid = sid_of(join);
        w.drain();
        w.media_calls();
        let refused = |w: &mut World, participant: &ParticipantSid| {
            let now = w.now;
            w.sfu.handle_media_event(
                now,
                MediaEvent::NegotiationRefused {
                    participant: participant.clone(),
                },
            );
            w.drain_all()
        };
        let told = |conn, action| Output::Send {
            conn,
            message: Box::new(SignalResponse {
                message: Some(leave(
                    livekit_protocol::DisconnectReason::MediaFailure,
                    action,
                )),
            }),
        };
        for _ in 0..2 {
            assert_eq!(
                refused(&mut w, &alice_sid),
                vec![told(alice, LeaveAction::Reconnect)],
                "her session, refused before she joined again"
            );
        }
        assert_eq!(
            w.media_calls(),
            Vec::<String>::new(),
            "she stays until she goes"
        );

        // She joins again (the older session closed as a duplicate), and is refused again.
        w.advance(60);
        let (again, join) = w.join("alice");
        let again_sid = sid_of(join);
        w.drain();
        w.media_calls();
        let out = refused(&mut w, &again_sid);
        assert_eq!(out[0], told(again, LeaveAction::Disconnect));
        assert!(out.contains(&Output::Close { conn: again }));
        let sent = sent_of(out);
        let update = &updates_for(&sent, bob)[0];
        assert_eq!(update.sid, again_sid.to_string());
        assert_eq!(update.state, participant_info::State::Disconnected as i32);
        assert_eq!(
            update.disconnect_reason,
            livekit_protocol::DisconnectReason::MediaFailure as i32
        );
        assert!(
            w.media_calls().contains(&format!("left {again_sid}")),
            "her connections are closed"
        );
        assert_eq!(w.sfu.counts(), (1, 1), "Bob stays");
        // An event about a participant who is gone changes nothing.
        assert_eq!(refused(&mut w, &again_sid), vec![]);

        // Bob's first refusal is his own: he is asked to join again. Alice, back after the
        // memory of hers has passed, is too.
        assert_eq!(
            refused(&mut w, &bob_sid),
            vec![told(bob, LeaveAction::Reconnect)]
        );
        w.now += REFUSALS_REMEMBERED;
        w.sfu.handle_timeout(w.now);
        assert!(
            w.sfu.refusals.is_empty(),
            "forgotten once their time has passed"
        );
        let (third, join) = w.join("alice");
        let third_sid = sid_of(join);
        w.drain();
        // Her socket gone, the request is kept for her resume.
        w.sfu.handle_disconnect(w.now, third);
        assert_eq!(refused(&mut w, &third_sid), vec![]);
        let resumed = w.resume("alice", third_sid.as_str()).unwrap();
        let rejoin = leave(
            livekit_protocol::DisconnectReason::MediaFailure,
            LeaveAction::Reconnect,
        );
        assert!(w.drain().contains(&(resumed, rejoin)), "told on her resume");
    }

    #[test]
    fn a_dropped_socket_resumes_the_same_session_until_its_ping_timeout() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        let (bob, _) = w.join("bob");
        w.request(alice, add_video("cam"));
        w.drain();
        w.media_calls();

        w.sfu.handle_disconnect(w.now, alice);
        w.advance(5);
        // Meanwhile Bob publishes, and Carol comes and goes: Alice's client misses all of it.
        w.request(bob, add_video("bobcam"));
        let (carol, _) = w.join("carol");
        w.request(
            carol,
            signal_request::Message::Leave(LeaveRequest::default()),
        );
        // Her media connected meanwhile too: the others are told she is active.
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::Connected {
                participant: ParticipantSid::parse(&alice_sid).unwrap(),
            },
        );
        let sent = w.drain();
        assert!(
            sent.iter().all(|(c, _)| *c != alice),
            "nothing to the dropped socket"
        );
        let about_alice: Vec<_> = updates_for(&sent, bob)
            .into_iter()
            .filter(|p| p.identity == "alice")
            .collect();
        assert_eq!(about_alice.len(), 1, "bob sees alice stay: {about_alice:?}");
        assert_eq!(about_alice[0].state, participant_info::State::Active as i32);
        w.media_calls();

        // Not someone else's session, nor one that never was.
        for (identity, sid) in [("bob", alice_sid.as_str()), ("alice", "PA_unknown")] {
            assert_eq!(w.resume(identity, sid), Err(JoinError::NoSession));
        }
        // The engine relayed her reliable data up to sequence 7: her client is told, so that it
        // sends again only what came after.
        w.sfu
            .media_mut()
            .reliable_sequences
            .insert(ParticipantSid::parse(&alice_sid).unwrap(), 7);
        let resumed = w.resume("alice", &alice_sid).unwrap();
        assert_ne!(resumed, alice);
        let sent = w.drain();
        let to_alice: Vec<_> = sent.iter().filter(|(c, _)| *c == resumed).collect();
        let Some((_, signal_response::Message::Reconnect(reconnect))) = to_alice.first() else {
            panic!("a reconnect response first: {to_alice:?}");
        };
        assert_eq!(
            reconnect
                .client_configuration
                .as_ref()
                .unwrap()
                .resume_connection,
            livekit_protocol::ClientConfigSetting::Enabled as i32
        );
        assert_eq!(reconnect.last_message_seq, 7);
        // What she missed, in order: bob's track, carol's coming and going; then everyone now,
        // herself first.
        let missed: Vec<(String, i32, usize)> = updates_for(&sent, resumed)
            .iter()
            .map(|p| (p.identity.clone(), p.state, p.tracks.len()))
            .collect();
        let (joined, gone) = (
            participant_info::State::Joined as i32,
            participant_info::State::Disconnected as i32,
        );
        assert_eq!(
            missed,
            vec![
                ("bob".to_owned(), joined, 1),
                ("carol".to_owned(), joined, 0),
                ("carol".to_owned(), gone, 0),
                (
                    "alice".to_owned(),
                    participant_info::State::Active as i32,
                    1
                ),
                ("bob".to_owned(), joined, 1),
            ]
        );
        assert!(updates_for(&sent, bob).is_empty());
        assert_eq!(w.media_calls(), vec![format!("resumed {alice_sid}")]);

        // The new connection is hers: pings are answered there, and keep her past the timeout.
        for _ in 0..5 {
            w.advance(4);
            w.request(resumed, signal_request::Message::Ping(1));
            w.request(bob, signal_request::Message::Ping(1));
            w.sfu.handle_timeout(w.now);
        }
        let sent = w.drain();
        assert!(
            sent.iter()
                .any(|(c, m)| *c == resumed && matches!(m, signal_response::Message::Pong(_)))
        );
        assert!(
            updates_for(&sent, bob).is_empty(),
            "alice never left: {sent:?}"
        );
        assert_eq!(w.sfu.counts(), (1, 2));

        // A resume while the server still holds the old socket closes that one.
        let again = w.resume("alice", &alice_sid).unwrap();
        assert!(w.drain_all().contains(&Output::Close { conn: resumed }));
        // After she leaves there is nothing to resume.
        w.request(
            again,
            signal_request::Message::Leave(LeaveRequest::default()),
        );
        w.drain();
        assert_eq!(w.resume("alice", &alice_sid), Err(JoinError::NoSession));
    }

    #[test]
    fn a_shutdown_tells_everyone_to_join_again_and_refuses_newcomers() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        let (bob, join) = w.join("bob");
        let bob_sid = join.participant.unwrap().sid;
        // Bob's socket is gone (kept for a resume): there is no one to tell.
        w.sfu.handle_disconnect(w.now, bob);
        w.drain();
        w.media_calls();

        w.sfu.shut_down(w.now);
        let out = w.drain_all();
        let told = Output::Send {
            conn: alice,
            message: Box::new(SignalResponse {
                message: Some(leave(
                    livekit_protocol::DisconnectReason::ServerShutdown,
                    LeaveAction::Reconnect,
                )),
            }),
        };
        assert_eq!(out, vec![told, Output::Close { conn: alice }]);
        let mut left = w.media_calls();
        left.sort();
        let mut expected = vec![format!("left {alice_sid}"), format!("left {bob_sid}")];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(w.sfu.counts(), (0, 0));

        let join = w
            .sfu
            .handle_join(w.now, grant("carol", "room"), JoinOptions::default());
        assert_eq!(join, Err(JoinError::ShuttingDown));
        assert_eq!(w.resume("bob", &bob_sid), Err(JoinError::ShuttingDown));
        w.sfu.shut_down(w.now);
        assert!(w.drain_all().is_empty(), "once");
    }

    /// A socket can die without the server seeing it (half-open): what is written to it meanwhile
    /// is lost, and no outbox keeps it. The others' state, sent on resume, shows who joined; a
    /// departure must be said again, or the client keeps a ghost tile.
    #[test]
    fn a_resume_says_again_who_left_while_the_socket_was_half_open() {
        use signal_request::Message::{Leave, Ping};
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        let (bob, _) = w.join("bob");
        let (erin, _) = w.join("erin");
        w.request(erin, Leave(LeaveRequest::default()));
        // Long enough ago that Alice's client, which went on pinging, has heard of it.
        for _ in 0..10 {
            w.advance(4);
            w.request(alice, Ping(1));
            w.request(bob, Ping(1));
            w.sfu.handle_timeout(w.now);
        }
        let (carol, _) = w.join("carol");
        let (dave, _) = w.join("dave");
        w.drain();

        // Alice's socket dies unnoticed: Carol leaves, Dave leaves and comes back.
        w.request(carol, Leave(LeaveRequest::default()));
        w.request(dave, Leave(LeaveRequest::default()));
        let gone = participant_info::State::Disconnected as i32;
        let lost = updates_for(&w.drain(), alice);
        assert!(
            lost.iter()
                .any(|p| p.identity == "carol" && p.state == gone),
            "the departure went to the dead socket: {lost:?}"
        );
        let (_, join) = w.join("dave");
        let dave_sid = join.participant.unwrap().sid;

        let resumed = w.resume("alice", &alice_sid).unwrap();
        let sent = w.drain();
        let updates: Vec<&ParticipantUpdate> = sent
            .iter()
            .filter(|(c, _)| *c == resumed)
            .filter_map(|(_, m)| match m {
                signal_response::Message::Update(u) => Some(u),
                _ => None,
            })
            .collect();
        let [departures, everyone] = updates.as_slice() else {
            panic!("the departures, then everyone: {updates:?}");
        };
        let departed: Vec<(&str, i32)> = departures
            .participants
            .iter()
            .map(|p| (p.identity.as_str(), p.state))
            .collect();
        // Not Erin (long ago), nor Dave: a DISCONNECTED for his identity would remove the Dave
        // who is back.
        assert_eq!(departed, [("carol", gone)]);
        let mut now: Vec<(&str, &str)> = everyone
            .participants
            .iter()
            .map(|p| (p.identity.as_str(), p.sid.as_str()))
            .collect();
        now.sort_unstable();
        assert_eq!(now.len(), 3);
        assert_eq!(now[0], ("alice", alice_sid.as_str()));
        assert_eq!(now[1].0, "bob");
        assert_eq!(now[2], ("dave", dave_sid.as_str()));
        assert!(everyone.participants.iter().all(|p| p.state != gone));
    }

    /// A participant toggling its microphone as fast as its frames allow: past a burst, the
    /// others hear of its changes twice a second, each time its latest info; at a person's
    /// pace, at once (review helper-100).
    #[test]
    fn own_changes_past_a_burst_reach_the_others_paced_with_the_latest_info() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(
            bob,
            signal_request::Message::AddTrack(microphone_request("mic")),
        );
        let mic = updates_for(&w.drain(), alice)[0].tracks[0].sid.clone();
        // The publication took a token: a few seconds give it back.
        w.now += Duration::from_secs(5);
        let toggle = |w: &mut World, muted: bool| {
            w.request(
                bob,
                signal_request::Message::Mute(MuteTrackRequest {
                    sid: mic.clone(),
                    muted,
                }),
            );
        };
        for i in 0..30 {
            toggle(&mut w, i % 2 == 0);
        }
        let heard = updates_for(&w.drain(), alice);
        assert_eq!(heard.len(), 10, "the burst");
        let held_until = w.sfu.poll_timeout().unwrap();
        assert_eq!(held_until, w.now + Duration::from_millis(500));
        w.now += Duration::from_millis(499);
        w.sfu.handle_timeout(w.now);
        assert!(updates_for(&w.drain(), alice).is_empty());
        w.now += Duration::from_millis(1);
        w.sfu.handle_timeout(w.now);
        let latest = updates_for(&w.drain(), alice);
        assert_eq!(latest.len(), 1);
        // The 30th toggle unmuted it: its info then, every change counted in its version.
        assert!(!latest[0].tracks[0].muted);
        assert_eq!(latest[0].version, heard[0].version + 29);
        w.sfu.handle_timeout(w.now + Duration::from_secs(5));
        assert!(
            updates_for(&w.drain(), alice).is_empty(),
            "nothing more held"
        );
        // A person's pace: each change at once.
        for i in 0..20 {
            w.now += Duration::from_secs(1);
            toggle(&mut w, i % 2 == 0);
            assert_eq!(updates_for(&w.drain(), alice).len(), 1, "{i}");
        }
    }

    #[test]
    fn a_resume_sends_a_fresh_token_and_a_gap_too_busy_to_replay_is_refused() {
        let mut w = World::new();
        w.sfu
            .set_signing_keys(ApiKeys::new().with("key", crate::auth::ApiSecret::new("s3cret")));
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        w.join("bob");
        w.drain();
        w.sfu.handle_disconnect(w.now, alice);
        let resumed = w.resume("alice", &alice_sid).unwrap();
        w.drain();
        w.sfu.handle_timeout(w.now);
        assert!(
            w.drain()
                .iter()
                .any(|(c, m)| *c == resumed
                    && matches!(m, signal_response::Message::RefreshToken(_))),
            "a fresh token after the resume"
        );
        // More than a resume replays: she must join afresh. (Bob's own changes past a burst
        // reach the others paced, so it takes others coming and going.)
        w.sfu.handle_disconnect(w.now, resumed);
        for i in 0..=MAX_OUTBOX / 2 {
            let (visitor, _) = w.join(&format!("visitor{i}"));
            w.request(
                visitor,
                signal_request::Message::Leave(LeaveRequest::default()),
            );
        }
        w.drain();
        assert_eq!(w.resume("alice", &alice_sid), Err(JoinError::NoSession));
    }

    /// A participant joining and leaving in a loop with one valid token: each time a pair of
    /// peer connections and an update to the room. Past its budget its joins and resumes are
    /// refused, before anything is created or anyone told; others join as before, and a joined
    /// participant's budget comes back with time.
    #[test]
    fn an_identity_joining_in_a_loop_is_refused_past_its_budget() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        for _ in 0..JOIN_BURST {
            let (bob, _) = w.join("bob");
            w.request(bob, signal_request::Message::Leave(LeaveRequest::default()));
            w.drain();
        }
        let again = w
            .sfu
            .handle_join(w.now, grant("bob", "room"), JoinOptions::default());
        assert_eq!(again, Err(JoinError::TooManyJoins));
        assert!(w.drain().is_empty(), "nobody told");
        assert_eq!(
            w.sfu
                .rooms
                .values()
                .map(|r| r.participants.len())
                .sum::<usize>(),
            1
        );
        w.join("carol");
        // One more after a refill; then a resume of that session counts as a join too.
        w.now += JOIN_REFILL;
        let (bob, join) = w.join("bob");
        let bob_sid = join.participant.unwrap().sid;
        w.sfu.handle_disconnect(w.now, bob);
        assert_eq!(w.resume("bob", &bob_sid), Err(JoinError::TooManyJoins));
        w.now += JOIN_REFILL;
        assert!(w.resume("bob", &bob_sid).is_ok());
        // Alice, joined once, resumes at will within her own budget.
        w.sfu.handle_disconnect(w.now, alice);
        let alice_sid = w
            .sfu
            .rooms
            .values()
            .flat_map(|r| r.participants.values())
            .find(|p| p.identity == "alice")
            .map(|p| p.sid.to_string())
            .unwrap();
        assert!(w.resume("alice", &alice_sid).is_ok());
    }

    #[test]
    fn join_budgets_full_again_are_forgotten() {
        let mut w = World::new();
        let room = RoomName::parse("room").unwrap();
        let many = JOIN_BUDGETS_PRUNED_FROM + 100;
        for n in 0..many {
            w.sfu.take_join(w.now, &room, &format!("id{n}")).unwrap();
        }
        assert_eq!(
            w.sfu.join_budgets.len(),
            many,
            "all of the last minute kept"
        );
        assert_eq!(w.sfu.prune_join_budgets_at, 2 * JOIN_BUDGETS_PRUNED_FROM);
        // A minute on, every one is full again: once the map reaches the mark they are forgotten.
        w.now += JOIN_REFILL * JOIN_BURST;
        for n in 0..JOIN_BUDGETS_PRUNED_FROM {
            w.sfu.take_join(w.now, &room, &format!("later{n}")).unwrap();
        }
        assert_eq!(w.sfu.join_budgets.len(), JOIN_BUDGETS_PRUNED_FROM);
        assert!(
            w.sfu
                .join_budgets
                .keys()
                .all(|(_, id)| id.starts_with("later"))
        );
    }

    #[test]
    fn duplicate_identity_kicks_the_older_session() {
        let mut w = World::new();
        let (first, first_join) = w.join("alice");
        let (bob, _) = w.join("bob");
        let conn = w
            .sfu
            .handle_join(w.now, grant("alice", "room"), JoinOptions::default())
            .unwrap();
        let out = w.drain_all();
        let leave_at = out
            .iter()
            .position(|o| {
                matches!(o, Output::Send { conn: c, message } if *c == first
                    && matches!(&message.message, Some(signal_response::Message::Leave(l))
                        if l.reason == livekit_protocol::DisconnectReason::DuplicateIdentity as i32))
            })
            .expect("leave to the first session");
        let close_at = out
            .iter()
            .position(|o| *o == Output::Close { conn: first })
            .unwrap();
        assert!(leave_at < close_at);
        let join = out
            .iter()
            .find_map(|o| match o {
                Output::Send { conn: c, message } if *c == conn => match &message.message {
                    Some(signal_response::Message::Join(j)) => Some(j.clone()),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        assert_eq!(join.other_participants.len(), 1);
        assert_ne!(
            join.participant.unwrap().sid,
            first_join.participant.unwrap().sid
        );
        // Bob saw the old session leave and the new one arrive.
        let sent = sent_of(out);
        let to_bob = updates_for(&sent, bob);
        assert_eq!(to_bob.len(), 2);
        assert_eq!(
            to_bob[0].state,
            participant_info::State::Disconnected as i32
        );
        assert_eq!(to_bob[1].state, participant_info::State::Joined as i32);
    }

    /// A participant silent for its ping timeout has its socket closed and is kept for a resume
    /// for [`RESUME_GRACE`] more, as after a drop; silent that long too, it is removed. Empty,
    /// the room closes after its empty timeout.
    #[test]
    fn silent_participants_time_out_and_empty_rooms_close() {
        let mut w = World::new();
        let start = w.now;
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        let (bob, _) = w.join("bob");
        w.drain();
        assert_eq!(w.sfu.poll_timeout(), Some(start + Duration::from_secs(15)));
        w.advance(10);
        w.request(bob, signal_request::Message::Ping(1));
        w.drain();
        w.advance(6);
        w.sfu.handle_timeout(w.now);
        let out = w.drain_all();
        assert_eq!(
            out,
            vec![Output::Close { conn: alice }],
            "bob is told nothing"
        );
        assert_eq!(w.sfu.counts(), (1, 2));
        // Next: Alice's grace ends at 25 s, Bob's ping timeout at 25 s too.
        assert_eq!(w.sfu.poll_timeout(), Some(start + Duration::from_secs(25)));
        w.sfu.handle_disconnect(w.now, bob);
        w.advance(9);
        w.sfu.handle_timeout(w.now);
        assert_eq!(w.sfu.counts(), (1, 2), "both kept at 25 s");
        w.advance(1);
        w.sfu.handle_timeout(w.now);
        assert_eq!(w.sfu.counts(), (1, 1), "alice gone at 26 s");
        assert_eq!(w.resume("alice", &alice_sid), Err(JoinError::NoSession));
        w.advance(10);
        w.sfu.handle_timeout(w.now);
        assert_eq!(
            w.sfu.counts(),
            (1, 0),
            "bob, last heard at 10 s, gone at 36 s"
        );
        let room = RoomName::parse("room").unwrap();
        w.advance(299);
        w.sfu.handle_timeout(w.now);
        assert!(w.sfu.has_room(&room));
        w.advance(2);
        w.sfu.handle_timeout(w.now);
        assert!(!w.sfu.has_room(&room));
    }

    /// A socket gone half-open: the server hears nothing from Alice's client from her last ping
    /// on, and her client, counting its own timeout from the pong to that ping, gives up on the
    /// socket just after the server's ping timeout, then resumes on a new one (review helper-71).
    /// She is still there to resume, Bob having seen nothing; what the room said meanwhile is
    /// kept for her.
    #[test]
    fn a_half_open_socket_is_closed_at_its_ping_timeout_and_its_session_resumed() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let alice_sid = join.participant.unwrap().sid;
        let (bob, _) = w.join("bob");
        w.request(alice, signal_request::Message::Ping(1));
        w.drain();
        // Bob pings every second; the server's timer runs every half second.
        for tick in 1..=31 {
            w.now += Duration::from_millis(500);
            if tick % 2 == 0 {
                w.request(bob, signal_request::Message::Ping(1));
            }
            w.sfu.handle_timeout(w.now);
        }
        let out = w.drain_all();
        assert!(
            out.contains(&Output::Close { conn: alice }),
            "her socket is closed"
        );
        // The shell then ends the socket's task, which tells the core of a drop or a kick: the
        // connection is no longer hers, and neither ends her session.
        w.sfu.handle_disconnect(w.now, alice);
        w.sfu.handle_kick(w.now, alice);
        let sent = sent_of(out);
        assert!(
            updates_for(&sent, bob).is_empty(),
            "bob sees nothing: {sent:?}"
        );
        // Bob publishes meanwhile: kept for her.
        w.request(bob, add_video("bobcam"));
        w.drain();
        w.advance(2);
        let resumed = w.resume("alice", &alice_sid).expect("her session is there");
        let sent = w.drain();
        assert!(
            updates_for(&sent, resumed)
                .iter()
                .any(|p| p.identity == "bob" && !p.tracks.is_empty()),
            "she hears of bob's camera: {sent:?}"
        );
    }

    #[test]
    fn media_events_reach_the_right_connection() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.drain();
        w.media_calls();
        let sid = ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        w.request(
            alice,
            signal_request::Message::Offer(SessionDescription {
                r#type: "offer".into(),
                sdp: "v=0".into(),
                id: 3,
                ..SessionDescription::default()
            }),
        );
        assert_eq!(w.media_calls(), vec![format!("publisher_offer {sid} 3")]);
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::PublisherAnswer {
                participant: sid.clone(),
                answer: SessionDescription {
                    r#type: "answer".into(),
                    sdp: "v=0".into(),
                    id: 3,
                    ..SessionDescription::default()
                },
            },
        );
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::Connected {
                participant: sid.clone(),
            },
        );
        let sent = w.drain();
        assert!(
            matches!(&sent[0], (c, signal_response::Message::Answer(a)) if *c == alice && a.id == 3)
        );
        let to_bob = updates_for(&sent, bob);
        assert_eq!(to_bob[0].state, participant_info::State::Active as i32);
    }

    #[test]
    fn speaker_changes_reach_everyone_in_the_room() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.drain();
        let room = RoomName::parse(&join.room.unwrap().name).unwrap();
        let sid = join.participant.unwrap().sid;
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::SpeakersChanged {
                room,
                speakers: vec![livekit_protocol::SpeakerInfo {
                    sid: sid.clone(),
                    level: 0.8,
                    active: true,
                }],
            },
        );
        let sent = w.drain();
        for conn in [alice, bob] {
            assert!(
                sent.iter().any(|(c, m)| *c == conn
                    && matches!(m, signal_response::Message::SpeakersChanged(s)
                        if s.speakers.len() == 1 && s.speakers[0].sid == sid && s.speakers[0].active)),
                "{conn} told: {sent:?}"
            );
        }
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::SpeakersChanged {
                room: RoomName::parse("elsewhere").unwrap(),
                speakers: Vec::new(),
            },
        );
        assert!(w.drain().is_empty(), "no one in another room is told");
    }

    #[test]
    fn a_paused_stream_is_told_to_its_subscriber_only() {
        let mut w = World::new();
        let (_, join) = w.join("alice");
        let (bob, bob_join) = w.join("bob");
        w.drain();
        let alice_sid = join.participant.unwrap().sid;
        let bob_sid = ParticipantSid::parse(&bob_join.participant.unwrap().sid).unwrap();
        let state = livekit_protocol::StreamStateInfo {
            participant_sid: alice_sid.clone(),
            track_sid: "TR_camera".into(),
            state: livekit_protocol::StreamState::Paused as i32,
        };
        w.sfu.handle_media_event(
            w.now,
            MediaEvent::StreamStates {
                participant: bob_sid,
                states: vec![state.clone()],
            },
        );
        let sent = w.drain();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(
            matches!(&sent[0], (c, signal_response::Message::StreamStateUpdate(u))
                if *c == bob && u.stream_states == vec![state.clone()]),
            "{sent:?}"
        );
    }

    #[test]
    fn permissions_are_enforced() {
        let mut w = World::new();
        let mut viewer = grant("viewer", "room");
        viewer.video.can_publish = Some(false);
        let conn = w.join_granted(viewer);
        w.drain();
        w.request(conn, add_video("cam"));
        assert!(w.drain().is_empty());

        let mut mic_only = grant("mic", "room");
        mic_only.video.can_publish_sources = vec!["microphone".into()];
        let conn = w.join_granted(mic_only);
        w.drain();
        w.request(conn, add_video("cam"));
        assert!(w.drain().is_empty());
    }

    #[test]
    fn a_grant_naming_only_unknown_sources_allows_none() {
        let mut w = World::new();
        let mut odd = grant("odd", "room");
        odd.video.can_publish_sources = vec!["CAMERA".into(), "mic".into()];
        let conn = w.join_granted(odd);
        w.drain();
        w.request(conn, add_video("cam"));
        assert!(w.drain().is_empty(), "no source it may publish");
        let mut partly = grant("partly", "room");
        partly.video.can_publish_sources = vec!["camera".into(), "mic".into()];
        let conn = w.join_granted(partly);
        w.drain();
        w.request(conn, add_video("cam"));
        assert!(
            w.drain().iter().any(
                |(c, m)| *c == conn && matches!(m, signal_response::Message::TrackPublished(_))
            ),
            "the source it names is allowed"
        );
    }

    #[test]
    fn oversized_or_too_many_tracks_are_refused_before_anyone_hears_of_them() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        let with = |change: &dyn Fn(&mut AddTrackRequest)| {
            let signal_request::Message::AddTrack(mut add) = add_video("big") else {
                unreachable!()
            };
            change(&mut add);
            signal_request::Message::AddTrack(add)
        };
        // One frame used to ask for codecs × layers copies (a 256 KiB frame: billions of them).
        let refused = [
            with(&|a| a.layers = vec![livekit_protocol::VideoLayer::default(); MAX_LAYERS + 1]),
            with(&|a| {
                a.simulcast_codecs =
                    vec![livekit_protocol::SimulcastCodec::default(); MAX_CODECS + 1];
            }),
            with(&|a| a.name = "n".repeat(MAX_TRACK_TEXT + 1)),
            with(&|a| a.cid = "c".repeat(MAX_TRACK_TEXT + 1)),
            with(&|a| a.simulcast_codecs[0].codec = "v".repeat(MAX_TRACK_TEXT + 1)),
            with(&|a| a.stream = "s".repeat(MAX_TRACK_TEXT + 1)),
            // A layer's rid is copied into the track and into each codec: four of 64 KiB each
            // made a track's info of over a megabyte, sent to the room at every mute.
            with(&|a| {
                a.layers = vec![livekit_protocol::VideoLayer {
                    rid: "r".repeat(MAX_TRACK_TEXT + 1),
                    ..Default::default()
                }];
            }),
            with(&|a| a.audio_features = vec![0; MAX_AUDIO_FEATURES + 1]),
            with(&|a| a.packet_trailer_features = vec![1; MAX_TRAILER_FEATURES + 1]),
        ];
        for add in refused {
            w.request(alice, add);
            assert!(w.drain().is_empty(), "refused, and nobody told");
        }
        for n in 0..MAX_TRACKS {
            w.request(alice, add_video(&format!("cam{n}")));
        }
        let sent = w.drain();
        assert_eq!(
            updates_for(&sent, bob).last().unwrap().tracks.len(),
            MAX_TRACKS
        );
        w.request(alice, add_video("one-too-many"));
        assert!(w.drain().is_empty(), "past {MAX_TRACKS} tracks");
    }

    #[test]
    fn a_track_unpublished_can_be_published_again_with_its_cid() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        w.request(alice, add_video("cam"));
        let sent = w.drain();
        let published = sent
            .iter()
            .find_map(|(_, m)| match m {
                signal_response::Message::TrackPublished(p) => p.track.clone(),
                _ => None,
            })
            .unwrap();
        let alice_sid = ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        w.sfu
            .unpublish_track(w.now, &alice_sid, &TrackSid::parse(&published.sid).unwrap());
        w.drain();
        w.request(alice, add_video("cam"));
        assert!(
            w.drain()
                .iter()
                .any(|(_, m)| matches!(m, signal_response::Message::TrackPublished(_))),
            "the cid is free again"
        );
    }

    #[test]
    fn settings_are_kept_for_tracks_of_the_room_only_and_each_changes_once() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(alice, add_video("cam"));
        let sent = w.drain();
        let real = updates_for(&sent, bob)[0].tracks[0].sid.clone();
        w.media_calls();
        let made_up: Vec<String> = (0..1000).map(|n| format!("TR_made_up_{n}")).collect();
        // The real one named many times is changed once.
        w.request(
            bob,
            signal_request::Message::TrackSetting(UpdateTrackSettings {
                track_sids: made_up
                    .into_iter()
                    .chain(std::iter::repeat_n(real.clone(), 1000))
                    .collect(),
                width: 320,
                height: 180,
                ..UpdateTrackSettings::default()
            }),
        );
        let calls = w.media_calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(calls[0].contains(&real), "{calls:?}");
        let p = w.sfu.rooms.values().flat_map(|r| r.participants.values());
        assert!(p.map(|p| p.settings.len()).all(|n| n <= 1));
    }

    #[test]
    fn hidden_participants_are_not_announced() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let mut ghost = grant("ghost", "room");
        ghost.video.hidden = true;
        let ghost = w.join_granted(ghost);
        let sent = w.drain();
        assert!(updates_for(&sent, alice).is_empty());
        let (_, bob) = w.join("bob");
        assert_eq!(bob.other_participants.len(), 1);
        // A track of its own, and the SFU ending it: still nothing said of it.
        w.request(ghost, add_video("cam"));
        let track = w.published_track();
        let ghost_sid = w.sfu.conns[&ghost].1.clone();
        w.sfu
            .unpublish_track(w.now, &ghost_sid, &TrackSid::parse(&track.sid).unwrap());
        let sent = w.drain();
        assert!(updates_for(&sent, alice).is_empty(), "{sent:?}");
    }

    #[test]
    fn server_unpublish_tells_publisher_and_others() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(alice, add_video("cam"));
        let sent = w.drain();
        let track = TrackSid::parse(&updates_for(&sent, bob)[0].tracks[0].sid).unwrap();
        let alice_sid = ParticipantSid::parse(&join.participant.unwrap().sid).unwrap();
        w.media_calls();
        w.sfu.unpublish_track(w.now, &alice_sid, &track);
        let sent = w.drain();
        assert!(sent.iter().any(|(c, m)| *c == alice
            && *m
                == signal_response::Message::TrackUnpublished(TrackUnpublishedResponse {
                    track_sid: track.to_string()
                })));
        let to_bob = updates_for(&sent, bob);
        assert!(to_bob[0].tracks.is_empty());
        assert!(!to_bob[0].is_publisher);
        let calls = w.media_calls();
        assert!(calls.contains(&format!("track_unpublished {alice_sid} {track}")));
        assert!(calls.iter().any(|c| c.starts_with("unsubscribe ")));
        // Unknown track: nothing happens.
        w.sfu.unpublish_track(w.now, &alice_sid, &track);
        assert!(w.drain_all().is_empty());
    }

    #[test]
    fn a_sync_state_after_a_resume_applies_what_the_client_believes() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(alice, add_video("cam"));
        let sent = w.drain();
        let cam = updates_for(&sent, bob)[0].tracks[0].clone();
        let track = TrackSid::parse(&cam.sid).unwrap();
        let alice_sid = join.participant.unwrap().sid;
        // Alice's `track_unpublished` goes to a half-open socket; she resumes on a new one.
        w.sfu
            .unpublish_track(w.now, &ParticipantSid::parse(&alice_sid).unwrap(), &track);
        w.drain();
        let alice = w.resume("alice", &alice_sid).unwrap();
        w.drain();
        let sync = |sync: livekit_protocol::SyncState| signal_request::Message::SyncState(sync);
        w.request(
            alice,
            sync(livekit_protocol::SyncState {
                publish_tracks: vec![TrackPublishedResponse {
                    cid: "cam".to_owned(),
                    track: Some(cam.clone()),
                }],
                ..Default::default()
            }),
        );
        assert_eq!(
            w.drain(),
            [(
                alice,
                signal_response::Message::TrackUnpublished(TrackUnpublishedResponse {
                    track_sid: cam.sid.clone()
                })
            )]
        );
        // Bob's: a track switched off, and one unsubscribed, as his client has them.
        w.request(alice, add_video("cam2"));
        let sent = w.drain();
        let cam2 = updates_for(&sent, bob)[0].tracks[0].sid.clone();
        w.media_calls();
        w.request(
            bob,
            sync(livekit_protocol::SyncState {
                track_sids_disabled: vec![cam2.clone()],
                ..Default::default()
            }),
        );
        let bob_sid = w
            .sfu
            .conns
            .get(&bob)
            .map(|(_, sid)| sid.to_string())
            .unwrap();
        assert!(
            w.media_calls()
                .contains(&format!("settings {bob_sid} {cam2} true 0x0")),
            "switched off"
        );
        w.request(
            bob,
            sync(livekit_protocol::SyncState {
                subscription: Some(UpdateSubscription {
                    track_sids: vec![cam2.clone()],
                    subscribe: false,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        assert!(
            w.media_calls()
                .contains(&format!("unsubscribe {bob_sid} {cam2}")),
            "unsubscribed"
        );
        // Tracks it still has: nothing said.
        w.request(
            alice,
            sync(livekit_protocol::SyncState {
                publish_tracks: vec![TrackPublishedResponse {
                    cid: "cam2".to_owned(),
                    track: Some(TrackInfo {
                        sid: cam2,
                        ..TrackInfo::default()
                    }),
                }],
                ..Default::default()
            }),
        );
        assert!(w.drain().is_empty());
    }

    #[test]
    fn the_client_protocol_and_a_tracks_trailer_features_reach_the_others() {
        let mut w = World::new();
        let options = JoinOptions {
            client_protocol: 1,
            ..JoinOptions::default()
        };
        let (alice, _) = w.join_with("alice", options);
        let (_, join) = w.join("bob");
        let others: Vec<i32> = join
            .other_participants
            .iter()
            .map(|p| p.client_protocol)
            .collect();
        assert_eq!(
            others,
            [1],
            "livekit-client sends RPC by data stream from 1 on"
        );
        let mut add = video_request("cam");
        add.packet_trailer_features = vec![1];
        w.request(alice, signal_request::Message::AddTrack(add));
        assert_eq!(w.published_track().packet_trailer_features, [1]);
    }

    /// Refused at once, named back by its handle (what livekit-client reads) and its name; a
    /// name past the bound, and the rest of the request, are not named back.
    #[test]
    fn a_data_track_is_refused_at_once_naming_its_handle() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        w.drain();
        let long = "n".repeat(MAX_TRACK_TEXT + 1);
        for (handle, name) in [(7, "position"), (8, long.as_str())] {
            w.request(
                alice,
                signal_request::Message::PublishDataTrackRequest(
                    livekit_protocol::PublishDataTrackRequest {
                        pub_handle: handle,
                        name: name.to_owned(),
                        encryption: livekit_protocol::encryption::Type::Gcm.into(),
                        ..Default::default()
                    },
                ),
            );
        }
        let sent = w.drain();
        let named_back: Vec<_> = sent
            .iter()
            .filter_map(|(c, m)| match m {
                signal_response::Message::RequestResponse(r) if *c == alice => Some(r),
                _ => None,
            })
            .map(|r| {
                assert_eq!(
                    r.reason(),
                    livekit_protocol::request_response::Reason::NotAllowed
                );
                match &r.request {
                    Some(livekit_protocol::request_response::Request::PublishDataTrack(p)) => {
                        (p.pub_handle, p.name.clone(), p.encryption)
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            named_back,
            [(7, "position".to_owned(), 0), (8, String::new(), 0)]
        );
    }

    /// An `update_metadata` request numbered `request_id`.
    fn metadata_update(
        request_id: u32,
        name: &str,
        metadata: &str,
        attributes: &[(&str, &str)],
    ) -> signal_request::Message {
        signal_request::Message::UpdateMetadata(livekit_protocol::UpdateParticipantMetadata {
            metadata: metadata.to_owned(),
            name: name.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            request_id,
        })
    }

    /// The `request_response`s among `sent` to `conn`: request ids and reasons.
    fn answers_to(
        sent: &[(ConnId, signal_response::Message)],
        conn: ConnId,
    ) -> Vec<(u32, livekit_protocol::request_response::Reason)> {
        sent.iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, m)| match m {
                signal_response::Message::RequestResponse(r) => Some((r.request_id, r.reason())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_metadata_update_stays_within_the_token_a_resume_takes() {
        use livekit_protocol::request_response::Reason;
        let mut w = World::new();
        let keys = ApiKeys::new().with("key", crate::auth::ApiSecret::new("s3cret"));
        w.sfu.set_signing_keys(keys.clone());
        let mut allowed = grant("alice", "room");
        allowed.video.can_update_own_metadata = Some(true);
        let alice = w.join_granted(allowed);
        w.drain();
        // Quotes double when written into the token: within each bound, past the token's.
        let quotes = "\"".repeat(MAX_METADATA_BYTES);
        let more = "\"".repeat(MAX_ATTRIBUTES_BYTES - 1);
        w.request(alice, metadata_update(1, "", &quotes, &[("k", &more)]));
        assert_eq!(answers_to(&w.drain(), alice), [(1, Reason::LimitExceeded)]);
        // The most plain text is taken, and the token sent next (at once) still verifies.
        let metadata = "m".repeat(MAX_METADATA_BYTES);
        let value = "v".repeat(MAX_ATTRIBUTES_BYTES - 1);
        w.request(alice, metadata_update(2, "", &metadata, &[("k", &value)]));
        assert_eq!(answers_to(&w.drain(), alice), [(2, Reason::Ok)]);
        w.sfu.handle_timeout(w.now);
        let token = w
            .first_to(alice, |m| match m {
                signal_response::Message::RefreshToken(t) => Some(t),
                _ => None,
            })
            .expect("a fresh token at once");
        let now_secs = 1_800_000_000;
        let renewed = crate::auth::verify_join(&token, &keys, now_secs, Some("room")).unwrap();
        assert_eq!(renewed.metadata, metadata);
        assert_eq!(renewed.attributes.get("k"), Some(&value));
    }

    /// livekit-client sends its name and metadata back with every update (`metadata ??
    /// this.metadata`): ones its token gave it past the limits do not make every later update
    /// of its attributes fail (review helper-100). A change past the limits still does.
    #[test]
    fn texts_past_the_limits_from_the_token_sent_back_unchanged_do_not_refuse_an_update() {
        use livekit_protocol::request_response::Reason;
        let mut w = World::new();
        let mut allowed = grant("alice", "room");
        allowed.video.can_update_own_metadata = Some(true);
        allowed.name = "n".repeat(MAX_NAME_BYTES + 1);
        allowed.metadata = "m".repeat(MAX_METADATA_BYTES + 1);
        let (name, metadata) = (allowed.name.clone(), allowed.metadata.clone());
        let alice = w.join_granted(allowed);
        w.drain();
        w.request(alice, metadata_update(1, &name, &metadata, &[("a", "1")]));
        let sent = w.drain();
        assert_eq!(answers_to(&sent, alice), [(1, Reason::Ok)]);
        assert_eq!(
            updates_for(&sent, alice)[0].attributes.get("a").unwrap(),
            "1"
        );
        let other = "o".repeat(MAX_NAME_BYTES + 1);
        w.request(alice, metadata_update(2, &other, &metadata, &[]));
        assert_eq!(answers_to(&w.drain(), alice), [(2, Reason::LimitExceeded)]);
        // With keys, so renewed tokens: one too large to renew already (sent none) may still
        // change its attributes; one that fits may not change past the limit.
        let mut w = World::new();
        let keys = ApiKeys::new().with("key", crate::auth::ApiSecret::new("s3cret"));
        w.sfu.set_signing_keys(keys);
        let mut large = grant("alice", "room");
        large.video.can_update_own_metadata = Some(true);
        large.metadata = "m".repeat(MAX_METADATA_BYTES);
        large
            .attributes
            .insert("k".into(), "v".repeat(MAX_ATTRIBUTES_BYTES - 1));
        large.name = "n".repeat(3_000);
        let (name, metadata) = (large.name.clone(), large.metadata.clone());
        let alice = w.join_granted(large);
        let mut fits = grant("bob", "room");
        fits.video.can_update_own_metadata = Some(true);
        let bob = w.join_granted(fits);
        w.drain();
        w.request(alice, metadata_update(3, &name, &metadata, &[("k", "1")]));
        // Quotes double when written into the token.
        let (quotes, more) = (
            "\"".repeat(MAX_METADATA_BYTES),
            "\"".repeat(MAX_ATTRIBUTES_BYTES - 1),
        );
        w.request(bob, metadata_update(4, "", &quotes, &[("k", &more)]));
        let sent = w.drain();
        assert_eq!(answers_to(&sent, alice), [(3, Reason::Ok)]);
        assert_eq!(answers_to(&sent, bob), [(4, Reason::LimitExceeded)]);
    }

    #[test]
    fn a_metadata_update_reaches_everyone_or_is_refused_with_its_reason() {
        use livekit_protocol::request_response::Reason;
        let mut w = World::new();
        let mut allowed = grant("alice", "room");
        allowed.video.can_update_own_metadata = Some(true);
        let alice = w.join_granted(allowed);
        let (bob, _) = w.join("bob");
        w.drain();
        let attributes = |info: &ParticipantInfo| -> BTreeMap<String, String> {
            info.attributes.clone().into_iter().collect()
        };

        w.request(
            alice,
            metadata_update(
                1,
                "Dr Alice",
                "{\"role\":\"doctor\"}",
                &[("a", "1"), ("b", "2")],
            ),
        );
        let sent = w.drain();
        // Alice sees her own info change (which livekit-client waits for), then the answer.
        let own = updates_for(&sent, alice);
        assert_eq!(own.len(), 1, "{sent:?}");
        assert_eq!((own[0].name.as_str(), own[0].version), ("Dr Alice", 2));
        assert_eq!(own[0].metadata, "{\"role\":\"doctor\"}");
        assert_eq!(updates_for(&sent, bob), own, "Bob sees the same");
        assert_eq!(answers_to(&sent, alice), [(1, Reason::Ok)]);
        assert!(matches!(
            sent.last(),
            Some((c, signal_response::Message::RequestResponse(_))) if *c == alice
        ));
        // An empty name or metadata leaves it; an attribute set to "" goes.
        w.request(alice, metadata_update(2, "", "", &[("a", "")]));
        let sent = w.drain();
        let own = updates_for(&sent, alice);
        assert_eq!((own[0].name.as_str(), own[0].version), ("Dr Alice", 3));
        assert_eq!(own[0].metadata, "{\"role\":\"doctor\"}");
        assert_eq!(
            attributes(&own[0]),
            BTreeMap::from([("b".to_owned(), "2".to_owned())])
        );
        assert_eq!(answers_to(&sent, alice), [(2, Reason::Ok)]);
        // Too large: refused, nothing changes; named back without what is too large.
        let big = "m".repeat(MAX_METADATA_BYTES + 1);
        w.request(alice, metadata_update(3, "Dr A", &big, &[("a", "1")]));
        let sent = w.drain();
        assert!(updates_for(&sent, bob).is_empty());
        assert_eq!(answers_to(&sent, alice), [(3, Reason::LimitExceeded)]);
        let echoed = sent.iter().find_map(|(_, m)| match m {
            signal_response::Message::RequestResponse(livekit_protocol::RequestResponse {
                request: Some(livekit_protocol::request_response::Request::UpdateMetadata(u)),
                ..
            }) => Some(u),
            _ => None,
        });
        let echoed = echoed.unwrap();
        assert_eq!(
            (echoed.name.as_str(), echoed.metadata.as_str()),
            ("Dr A", "")
        );
        assert_eq!(echoed.attributes.len(), 1);
        // Without `canUpdateOwnMetadata`: refused at once.
        w.request(bob, metadata_update(4, "Bobby", "", &[]));
        let sent = w.drain();
        assert!(updates_for(&sent, alice).is_empty());
        assert_eq!(answers_to(&sent, bob), [(4, Reason::NotAllowed)]);
    }

    /// `update_audio_track` (livekit-client's answer to a microphone's noise filter changing)
    /// changes the publisher's own microphone in everyone's view, as LiveKit keeps it; a track
    /// not its own or not audio is `NOT_FOUND`, too many features `LIMIT_EXCEEDED` (a frame's
    /// worth is refused, and named back cut to the limit), and a refusal or a repeat changes
    /// nothing.
    #[test]
    #[expect(
        deprecated,
        reason = "LiveKit fills stereo and disable_dtx from the features"
    )]
    fn a_publisher_updates_its_microphones_features() {
        use livekit_protocol::AudioTrackFeature as F;
        use livekit_protocol::request_response::{Reason, Request};
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(
            alice,
            signal_request::Message::AddTrack(AddTrackRequest {
                audio_features: vec![F::TfEchoCancellation.into(), F::TfPreconnectBuffer.into()],
                ..microphone_request("mic")
            }),
        );
        w.request(alice, add_video("cam"));
        let sent = w.drain();
        let published = updates_for(&sent, bob).pop().unwrap();
        let sid_of = |kind: TrackType| {
            let t = published
                .tracks
                .iter()
                .find(|t| t.r#type == i32::from(kind));
            t.unwrap().sid.clone()
        };
        let (mic, cam) = (sid_of(TrackType::Audio), sid_of(TrackType::Video));
        let features = |features: &[F]| features.iter().map(|f| i32::from(*f)).collect::<Vec<_>>();
        let update = |sid: &str, features: Vec<i32>| {
            signal_request::Message::UpdateAudioTrack(livekit_protocol::UpdateLocalAudioTrack {
                track_sid: sid.to_owned(),
                features,
            })
        };
        let audio = |sid: &str, list: &[F]| update(sid, features(list));
        // The refusals Alice is sent: reason, the sid and how many features named back.
        let refusals = |sent: &[(ConnId, signal_response::Message)]| {
            sent.iter()
                .filter(|(c, _)| *c == alice)
                .filter_map(|(_, m)| match m {
                    signal_response::Message::RequestResponse(r) => match &r.request {
                        Some(Request::UpdateAudioTrack(u)) => {
                            Some((r.reason(), u.track_sid.clone(), u.features.len()))
                        }
                        other => panic!("{other:?}"),
                    },
                    _ => None,
                })
                .collect::<Vec<_>>()
        };

        // The pre-connect buffer sent, stereo and no DTX asked for; a feature named twice counts
        // once.
        let now = [F::TfEchoCancellation, F::TfStereo, F::TfNoDtx, F::TfStereo];
        w.request(alice, audio(&mic, &now));
        let sent = w.drain();
        let seen = updates_for(&sent, bob);
        assert_eq!(seen.len(), 1, "{sent:?}");
        assert!(seen[0].version > published.version);
        let track = seen[0].tracks.iter().find(|t| t.sid == mic).unwrap();
        assert_eq!(track.audio_features, features(&now[..3]));
        assert!(track.stereo && track.disable_dtx);
        assert!(refusals(&sent).is_empty());
        // The same again: nothing to tell.
        w.request(alice, audio(&mic, &now));
        assert!(updates_for(&w.drain(), bob).is_empty());
        // Mono again, with DTX; exactly as many distinct features as allowed, repeated.
        w.request(alice, audio(&mic, &[F::TfNoiseSuppression]));
        let seen = updates_for(&w.drain(), bob);
        let track = seen[0].tracks.iter().find(|t| t.sid == mic).unwrap();
        assert_eq!(track.audio_features, features(&[F::TfNoiseSuppression]));
        assert!(!track.stereo && !track.disable_dtx);
        let most: Vec<i32> = (0..i32::try_from(MAX_AUDIO_FEATURES).unwrap()).collect();
        w.request(alice, update(&mic, [most.clone(), most.clone()].concat()));
        let seen = updates_for(&w.drain(), bob);
        let track = seen[0].tracks.iter().find(|t| t.sid == mic).unwrap();
        assert_eq!(track.audio_features, most);

        // Refused: a video track, someone else's, an unknown one; one feature too many; a
        // frame's worth of distinct ones.
        let many = |n: i32| (0..n).collect::<Vec<i32>>();
        w.request(alice, audio(&cam, &[F::TfStereo]));
        w.request(bob, audio(&mic, &[F::TfStereo]));
        w.request(alice, update("TR_unknown", many(100_000)));
        w.request(alice, update(&"TR_x".repeat(100), vec![]));
        w.request(alice, update(&mic, many(most.len() as i32 + 1)));
        w.request(alice, update(&mic, many(100_000)));
        let sent = w.drain();
        assert!(updates_for(&sent, bob).is_empty() && updates_for(&sent, alice).is_empty());
        assert_eq!(
            refusals(&sent),
            [
                (Reason::NotFound, cam.clone(), 1),
                (
                    Reason::NotFound,
                    "TR_unknown".to_owned(),
                    MAX_AUDIO_FEATURES
                ),
                (Reason::NotFound, String::new(), 0),
                (Reason::LimitExceeded, mic.clone(), MAX_AUDIO_FEATURES),
                (Reason::LimitExceeded, mic.clone(), MAX_AUDIO_FEATURES),
            ]
        );
        assert_eq!(
            answers_to(&sent, bob).len(),
            1,
            "Bob's, about a track not his"
        );
    }

    /// What a connection is owed beyond its burst: a setting for each video track it receives,
    /// not its own, not audio, not one its publisher refuses it, not one it unsubscribed from.
    #[test]
    fn the_video_tracks_a_connection_receives_are_counted() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        let (carol, _) = w.join("carol");
        w.request(alice, add_video("cam"));
        w.request(alice, add_video("cam-2"));
        w.request(bob, add_video("cam"));
        w.request(
            bob,
            signal_request::Message::AddTrack(microphone_request("mic")),
        );
        let sent = w.drain();
        let latest = |identity: &str| {
            let mut seen = updates_for(&sent, carol).into_iter().rev();
            seen.find(|p| p.identity == identity).unwrap()
        };
        let videos = |info: ParticipantInfo| -> Vec<TrackSid> {
            let tracks = info.tracks.into_iter();
            let tracks = tracks.filter(|t| t.r#type == i32::from(TrackType::Video));
            tracks.filter_map(|t| TrackSid::parse(&t.sid)).collect()
        };
        let (alices, bobs) = (videos(latest("alice")), videos(latest("bob")));
        assert_eq!((alices.len(), bobs.len()), (2, 1));
        let sorted = |mut sids: Vec<TrackSid>| {
            sids.sort_unstable();
            sids
        };
        let received = |w: &World, conn| sorted(w.sfu.video_subscriptions(conn));
        assert_eq!(received(&w, alice), bobs);
        assert_eq!(received(&w, bob), sorted(alices.clone()));
        assert_eq!(
            received(&w, carol),
            sorted([alices.clone(), bobs.clone()].concat())
        );
        assert!(w.sfu.video_subscriptions(ConnId(u64::MAX)).is_empty());
        // Bob lets only Alice receive his camera; Carol drops one of Alice's.
        w.request(
            bob,
            signal_request::Message::SubscriptionPermission(
                livekit_protocol::SubscriptionPermission {
                    all_participants: false,
                    track_permissions: vec![livekit_protocol::TrackPermission {
                        participant_identity: "alice".to_owned(),
                        all_tracks: true,
                        ..Default::default()
                    }],
                },
            ),
        );
        w.request(
            carol,
            signal_request::Message::Subscription(UpdateSubscription {
                track_sids: vec![alices[0].to_string()],
                subscribe: false,
                ..Default::default()
            }),
        );
        w.drain();
        assert_eq!(received(&w, alice), bobs);
        assert_eq!(received(&w, carol), [alices[1].clone()]);
    }

    #[test]
    fn versions_only_increase() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        let (bob, _) = w.join("bob");
        w.request(alice, add_video("cam"));
        let mut sent = w.drain();
        let track_sid = updates_for(&sent, bob)[0].tracks[0].sid.clone();
        for muted in [true, false, true] {
            w.request(
                alice,
                signal_request::Message::Mute(MuteTrackRequest {
                    sid: track_sid.clone(),
                    muted,
                }),
            );
            sent.extend(w.drain());
        }
        w.request(
            alice,
            signal_request::Message::Leave(LeaveRequest::default()),
        );
        sent.extend(w.drain());
        let versions: Vec<u32> = updates_for(&sent, bob).iter().map(|p| p.version).collect();
        assert_eq!(versions.len(), 5);
        assert!(versions.windows(2).all(|v| v[0] < v[1]), "{versions:?}");
    }

    /// The layers each subscriber-side change leaves enabled, as Alice (the publisher) is told.
    fn layer_updates(sent: &[(ConnId, signal_response::Message)], to: ConnId) -> Vec<Vec<bool>> {
        sent.iter()
            .filter(|(c, _)| *c == to)
            .filter_map(|(_, m)| match m {
                signal_response::Message::SubscribedQualityUpdate(u) => Some(
                    u.subscribed_codecs[0]
                        .qualities
                        .iter()
                        .map(|q| q.enabled)
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// A phone that switches networks leaves a half-open socket the server does not see drop:
    /// what is sent to it is lost, and no outbox keeps it. The resume says again which layers to
    /// send, or a patient whose layers went off while alone stays invisible to the doctor.
    #[test]
    fn a_resume_says_again_which_layers_to_send() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        w.request(alice, add_video("cam-1"));
        w.drain();
        w.now += dynacast::DOWNGRADE_DELAY + Duration::from_secs(1);
        w.sfu.handle_timeout(w.now);
        assert_eq!(layer_updates(&w.drain(), alice), [[false, false, false]]);
        // The doctor comes: "all on" goes to the socket that is already dead.
        w.sfu
            .handle_join(w.now, grant("bob", "room"), JoinOptions::default())
            .unwrap();
        assert_eq!(layer_updates(&w.drain(), alice), [[true, true, true]]);
        let resumed = w.resume("alice", &join.participant.unwrap().sid).unwrap();
        assert_eq!(layer_updates(&w.drain(), resumed), [[true, true, true]]);
    }

    /// Alice mutes her camera while her socket is already dead: the request never arrives, and
    /// Bob goes on seeing the camera on. livekit-client sets a track's mute again when its own
    /// info says otherwise, so the resume tells Alice her own info, with the track as the
    /// server has it and a version her client takes.
    #[test]
    fn a_resume_tells_the_client_its_own_info_so_a_lost_mute_is_set_again() {
        let mut w = World::new();
        let (alice, join) = w.join("alice");
        let me = join.participant.unwrap();
        w.request(alice, add_video("cam-1"));
        let sent = w.drain();
        let (_, bobs) = w.join("bob");
        let camera = bobs
            .other_participants
            .iter()
            .find(|p| p.identity == "alice")
            .and_then(|p| p.tracks.first().cloned())
            .expect("bob knows alice's camera");
        assert!(!camera.muted);
        // Her mute is lost with the socket (nothing reaches the server); the server never sent
        // her her own info since the join.
        let sent = [sent, w.drain()].concat();
        assert!(
            updates_for(&sent, alice)
                .iter()
                .all(|p| p.identity != "alice")
        );

        let resumed = w.resume("alice", &me.sid).unwrap();
        let sent = w.drain();
        let own: Vec<ParticipantInfo> = updates_for(&sent, resumed)
            .into_iter()
            .filter(|p| p.identity == "alice")
            .collect();
        let [own] = own.as_slice() else {
            panic!("her own info once: {own:?}");
        };
        assert_eq!(own.sid, me.sid);
        assert!(own.version >= me.version, "a version her client would drop");
        let tracks: Vec<(&str, bool)> = own
            .tracks
            .iter()
            .map(|t| (t.sid.as_str(), t.muted))
            .collect();
        assert_eq!(
            tracks,
            [(camera.sid.as_str(), false)],
            "the camera as the server has it"
        );
    }

    #[test]
    fn publishers_are_told_which_layers_anyone_receives() {
        let mut w = World::new();
        let (alice, _) = w.join("alice");
        w.request(alice, add_video("cam-1"));
        let track = w.published_track();
        // Alone: every layer goes off once that has held for the delay, and not before.
        w.advance(1);
        w.sfu.handle_timeout(w.now);
        assert!(layer_updates(&w.drain(), alice).is_empty());
        w.now += dynacast::DOWNGRADE_DELAY;
        assert!(w.sfu.poll_timeout().is_some_and(|t| t <= w.now));
        w.sfu.handle_timeout(w.now);
        let sent = w.drain();
        assert_eq!(layer_updates(&sent, alice), [[false, false, false]]);
        assert!(sent.iter().any(|(_, m)| matches!(m,
            signal_response::Message::SubscribedQualityUpdate(u)
                if u.track_sid == track.sid && u.subscribed_codecs[0].codec == "vp8")));

        // Bob joins and is subscribed: everything comes back at once (no size known yet).
        let bob = w
            .sfu
            .handle_join(w.now, grant("bob", "room"), JoinOptions::default())
            .unwrap();
        assert_eq!(layer_updates(&w.drain(), alice), [[true, true, true]]);
        // Bob shows it in a 320 × 180 tile: only the lowest layer, after the delay.
        let setting = |disabled: bool, width: u32, height: u32| {
            signal_request::Message::TrackSetting(UpdateTrackSettings {
                track_sids: vec![track.sid.clone()],
                disabled,
                width,
                height,
                ..Default::default()
            })
        };
        w.request(bob, setting(false, 320, 180));
        assert!(layer_updates(&w.drain(), alice).is_empty());
        w.now += dynacast::DOWNGRADE_DELAY;
        w.sfu.handle_timeout(w.now);
        assert_eq!(layer_updates(&w.drain(), alice), [[true, false, false]]);
        // Alice mutes and unmutes her camera: the state is said again on unmute.
        for muted in [true, false] {
            w.request(
                alice,
                signal_request::Message::Mute(MuteTrackRequest {
                    sid: track.sid.clone(),
                    muted,
                }),
            );
        }
        assert_eq!(layer_updates(&w.drain(), alice), [[true, false, false]]);
        // Bigger (640 × 360): the middle layer at once.
        w.request(bob, setting(false, 640, 360));
        assert_eq!(layer_updates(&w.drain(), alice), [[true, true, false]]);
        // Hidden for a moment and shown again: nothing is paused.
        w.request(bob, setting(true, 640, 360));
        w.advance(1);
        w.request(bob, setting(false, 640, 360));
        w.now += dynacast::DOWNGRADE_DELAY;
        w.sfu.handle_timeout(w.now);
        assert!(layer_updates(&w.drain(), alice).is_empty());
        // Without a size, the layer Bob names counts (`setVideoQuality`), and OFF hides.
        let named = |quality: livekit_protocol::VideoQuality| {
            signal_request::Message::TrackSetting(UpdateTrackSettings {
                track_sids: vec![track.sid.clone()],
                quality: quality.into(),
                ..Default::default()
            })
        };
        w.request(bob, named(livekit_protocol::VideoQuality::High));
        assert_eq!(layer_updates(&w.drain(), alice), [[true, true, true]]);
        w.request(bob, named(livekit_protocol::VideoQuality::Off));
        w.now += dynacast::DOWNGRADE_DELAY;
        w.sfu.handle_timeout(w.now);
        assert_eq!(layer_updates(&w.drain(), alice), [[false, false, false]]);
        w.request(bob, setting(false, 640, 360));
        assert_eq!(layer_updates(&w.drain(), alice), [[true, true, false]]);
        // Bob leaves: all off after the delay.
        w.request(bob, signal_request::Message::Leave(LeaveRequest::default()));
        assert!(layer_updates(&w.drain(), alice).is_empty());
        w.now += dynacast::DOWNGRADE_DELAY;
        w.sfu.handle_timeout(w.now);
        assert_eq!(layer_updates(&w.drain(), alice), [[false, false, false]]);
    }

    #[test]
    fn a_renewed_token_a_resume_would_refuse_is_not_sent() {
        use crate::auth::ApiSecret;
        let mut w = World::new();
        let keys = ApiKeys::new().with("key", ApiSecret::new("a-core-test-secret-of-32-bytes!!"));
        w.sfu.set_signing_keys(keys);
        // Its metadata alone makes a token of over 8 KiB once encoded.
        let mut big = grant("alice", "room");
        big.metadata = "m".repeat(6_200);
        let alice = w.join_granted(big);
        let (bob, _) = w.join("bob");
        let mut sent = Vec::new();
        for _ in 0..31 {
            w.now += Duration::from_secs(10);
            w.request(alice, signal_request::Message::Ping(0));
            w.request(bob, signal_request::Message::Ping(0));
            w.sfu.handle_timeout(w.now);
            sent.extend(w.drain().into_iter().filter_map(|(c, m)| {
                matches!(m, signal_response::Message::RefreshToken(_)).then_some(c)
            }));
        }
        assert_eq!(sent, [bob], "bob's renewed, not alice's");
    }

    #[test]
    fn connected_participants_get_renewed_tokens_for_their_reconnects() {
        use crate::auth::{ApiSecret, verify_join};
        let mut w = World::new();
        let keys = ApiKeys::new().with("key", ApiSecret::new("a-core-test-secret-of-32-bytes!!"));
        w.sfu.set_signing_keys(keys.clone());
        let (alice, _) = w.join("alice");
        // Alice pings every 10 s for `secs`; the tokens she is sent meanwhile.
        let live = |w: &mut World, secs: u64| -> Vec<String> {
            let mut tokens = Vec::new();
            for _ in 0..secs / 10 {
                w.now += Duration::from_secs(10);
                w.request(alice, signal_request::Message::Ping(0));
                w.sfu.handle_timeout(w.now);
                tokens.extend(w.drain().into_iter().filter_map(|(c, m)| match m {
                    signal_response::Message::RefreshToken(t) if c == alice => Some(t),
                    _ => None,
                }));
            }
            tokens
        };
        assert!(live(&mut w, 290).is_empty());
        let tokens = live(&mut w, 10);
        assert_eq!(tokens.len(), 1);
        // The same grant as the join token, signed with the same key, valid for ten minutes
        // from now (World's clock starts at 1 800 000 000 s).
        let now_unix = 1_800_000_000 + 300;
        let renewed = verify_join(&tokens[0], &keys, now_unix, Some("room")).unwrap();
        assert_eq!(renewed, grant("alice", "room"));
        assert!(verify_join(&tokens[0], &keys, now_unix + 600, Some("room")).is_ok());
        // Past exp (and the 60 s leeway verification allows), it is refused.
        assert!(verify_join(&tokens[0], &keys, now_unix + 600 + 61, Some("room")).is_err());
        // Every five minutes while she stays.
        assert_eq!(live(&mut w, 300).len(), 1);
        // Once she is gone, nothing more.
        w.request(
            alice,
            signal_request::Message::Leave(LeaveRequest::default()),
        );
        assert!(live(&mut w, 600).is_empty());
    }
}
