//! One server-side WebRTC peer connection as a sans-IO state machine.
//!
//! Wraps `rtc::peer_connection::RTCPeerConnection` (webrtc-rs). Inputs are `handle_*` calls that take
//! `now`; outputs are drained with `poll_transmit`, `poll_event` and `poll_timeout`, in the manner of
//! quinn-proto and str0m. The wrapper adds what an SFU needs on top of `rtc`: each incoming RTP packet
//! is tagged with its SSRC, the m-line's mid and the simulcast rid, and packets written to a local
//! track get that track's SSRC and negotiated payload type.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use consulta_sfu::data::DATA_QUEUE_BYTES;
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    CongestionControlBuilder, Gcc, ReceiverReportBuilder, SenderReportBuilder, Slot,
    TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;

pub use crate::feedback::RtcpDelivery;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

/// Distinct SSRCs of RTP and RTCP a connection hands `rtc` at most, twice over: those the SFU
/// did not authenticate itself (`rtc` keeps state for each before it checks the tag), and those
/// it did. A publisher's streams each show `rtc` their first packets (a simulcast camera with its
/// repair streams and a microphone are 7), and a browser's RTCP names a sender or two (Chromium:
/// 1 and 0xFA17FA17; Firefox one per transceiver, reused): some 300 republishes of a camera, and
/// `rtc`'s state for both sets is under a megabyte. Past it a new SSRC's datagrams are dropped,
/// with one warning. Two sets, so that spoofed datagrams filling the first keep out nothing the
/// SFU can authenticate, and a client holding the keys still cannot grow `rtc`'s state.
const MAX_SSRCS_TO_RTC: usize = 2048;

/// What can go wrong in the media engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebRTC stack refused an operation (bad SDP, wrong signalling state, DTLS failure...).
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    /// The peer connection produced no local description after a successful create/set.
    #[error("no local description")]
    NoLocalDescription,
    /// A local track handle that does not belong to this peer connection.
    #[error("unknown local track")]
    UnknownTrack,
    /// The own write path has not checked the connection's SRTP keys yet (`send::OwnWrite`): the
    /// packet is dropped, as `rtc` drops what is written before its DTLS handshake.
    #[error("the connection's SRTP keys are not checked yet")]
    KeysUnchecked,
    /// The local track's sender negotiated no codec with this MIME type.
    #[error("codec {0} not negotiated on the local track")]
    CodecNotNegotiated(String),
    /// No incoming stream with this SSRC.
    #[error("no incoming stream with ssrc {0}")]
    UnknownSsrc(u32),
    /// A trickled candidate that is not `RTCIceCandidateInit` JSON.
    #[error("malformed ICE candidate")]
    BadCandidate,
    /// A remote description with more media sections than [`MAX_MEDIA_SECTIONS`], or an answer
    /// with more than the offer.
    #[error("too many media sections: {0}")]
    TooManySections(usize),
    /// A trickled candidate past [`MAX_REMOTE_CANDIDATES`] for the remote's ICE credentials.
    #[error("too many ICE candidates")]
    TooManyCandidates,
    /// A data channel handle that does not belong to this peer connection.
    #[error("unknown data channel")]
    UnknownDataChannel,
    /// A data channel with [`DATA_QUEUE_BYTES`] bytes or more unacknowledged: the message is not
    /// queued.
    #[error("data channel backlogged")]
    DataBacklogged,
    /// Socket I/O in the shell.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Remote candidates kept before the remote description at most (a hostile client could send
/// any number).
const MAX_EARLY_CANDIDATES: usize = 32;

/// Media sections (`m=` lines) a remote offer may have. A publisher has a section per track it
/// sends (the core allows 8 at once) and one for data; a client that keeps a section for every
/// track it ever published (an unpublished track's transceiver is not stopped, so its section is
/// not reused) adds one per screen share in a long call. Each section becomes a transceiver that
/// every later negotiation goes through, and an offer of 256 KiB could hold thousands.
const MAX_MEDIA_SECTIONS: usize = 128;

/// Distinct remote candidates a connection takes while its ICE runs, trickled (those kept before
/// the remote description included) or written into remote descriptions; an ICE restart (a
/// remote offer with new credentials, or the SFU's own) makes `rtc` forget them and starts again.
/// A browser trickles a few per network interface and per STUN or TURN server, a handful to a
/// few dozen. Each one is kept in a list `rtc` searches whole for every new one, paired with the
/// local candidates and checked: without a bound a client could have the SFU send connectivity
/// checks to any number of addresses it names. A trickled candidate past it is ignored, and so
/// are those a description names past it (its other lines apply): ICE runs on the first 64.
/// Counted by what names a path ([`candidate_key`]), not by text.
const MAX_REMOTE_CANDIDATES: usize = 64;

/// Packets of each outgoing video stream kept to answer NACKs (`resend::Resender`):
/// ≈0.5 s of a 1.2 Mbit/s camera (124 packets/s), ≈0.25 s of a 2.5 Mbit/s one. That is at least
/// Janus's floor (200 ms), enough for the first NACK at any usable round trip and a second one
/// below ≈150 ms, and a repair arriving later than that is useless to a real-time decoder anyway.
/// Each entry holds a packet (≈1.2 KB resident), so this is most of what NACK costs in memory:
/// ≈75 KiB per subscribed video stream (128 entries made a 1:1 room cost ≈1.1 MiB, past its
/// 1 MiB budget; `rtc`'s default of 1024 would keep ≈1.2 MB per stream).
const NACK_HISTORY: u16 = 64;

/// An SDP media section identifier (`a=mid`), as negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mid(String);

impl Mid {
    /// The mid as it appears in SDP.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A simulcast RTP stream id (`a=rid`), as negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rid(String);

impl Rid {
    /// The rid as it appears in SDP.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl MediaKind {
    /// The RTP clock rate of the SFU's codecs of this kind (RFC 7741 for VP8, 7587 for Opus).
    fn clock_rate(self) -> u32 {
        match self {
            Self::Video => 90_000,
            Self::Audio => 48_000,
        }
    }

    fn from_rtc(kind: RtpCodecKind) -> Option<Self> {
        match kind {
            RtpCodecKind::Audio => Some(Self::Audio),
            RtpCodecKind::Video => Some(Self::Video),
            _ => None,
        }
    }

    fn to_rtc(self) -> RtpCodecKind {
        match self {
            Self::Audio => RtpCodecKind::Audio,
            Self::Video => RtpCodecKind::Video,
        }
    }
}

/// The connection state as the application needs it (the W3C `RTCPeerConnectionState`, minus
/// the "unspecified" placeholder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Created, nothing negotiated yet.
    New,
    /// ICE or DTLS under way.
    Connecting,
    /// ICE and DTLS done; media flows.
    Connected,
    /// Consent freshness lost; may recover.
    Disconnected,
    /// ICE or DTLS failed for good.
    Failed,
    /// Closed locally.
    Closed,
}

impl PeerState {
    fn from_rtc(state: RTCPeerConnectionState) -> Self {
        match state {
            RTCPeerConnectionState::Connecting => Self::Connecting,
            RTCPeerConnectionState::Connected => Self::Connected,
            RTCPeerConnectionState::Disconnected => Self::Disconnected,
            RTCPeerConnectionState::Failed => Self::Failed,
            RTCPeerConnectionState::Closed => Self::Closed,
            _ => Self::New,
        }
    }
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// The local address it must leave from (the socket given to [`MediaPeer::new`]).
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Bytes,
}

/// A remote track (or one simulcast layer of it) that started to arrive.
#[derive(Debug, Clone)]
pub struct IncomingTrack {
    /// The sender's track id (the second part of `a=msid`; livekit-client's `cid`).
    pub track_id: String,
    /// The m-line it arrives on.
    pub mid: Option<Mid>,
    /// The simulcast layer, when the sender uses rids.
    pub rid: Option<Rid>,
    /// Its SSRC (0 if `rtc` has not learnt it yet).
    pub ssrc: u32,
    /// Audio or video.
    pub kind: Option<MediaKind>,
}

/// One decrypted RTP packet from the remote peer.
#[derive(Debug, Clone)]
pub struct IncomingRtp {
    /// What the connection knows of the packet's stream (shared by all its packets).
    pub tag: Arc<StreamTag>,
    /// The packet's SSRC.
    pub ssrc: u32,
    /// The RFC 6464 audio level (0 = loudest, 127 = silence) when the sender included one.
    pub audio_level: Option<u8>,
    /// The packet itself (header and payload).
    pub packet: rtc::rtp::Packet,
    /// Opened by the own read path ([`MediaConfig::own_read_path`]), not by `rtc`.
    pub opened_here: bool,
    /// On a repair stream ([`StreamTag::is_repair`]): the SSRC of the layer stream it repairs,
    /// where the connection knows it (the stream of the same track and rid it opened last).
    pub repairs: Option<u32>,
}

/// A data channel of this peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataChannel(RTCDataChannelId);

/// What the peer connection reports.
#[derive(Debug)]
pub enum MediaEvent {
    /// The connection state changed.
    StateChanged(PeerState),
    /// A remote track (or simulcast layer) opened.
    TrackOpened(IncomingTrack),
    /// An RTP packet arrived.
    Rtp(IncomingRtp),
    /// Inbound RTCP arrived: by default only compound packets carrying a keyframe request (PLI or
    /// FIR), and none on a [`MediaDirection::ReceiveOnly`] connection; with
    /// [`RtcpDelivery::All`] every one. `rtc`'s interceptors have seen it first.
    Rtcp {
        /// The m-line it concerns, when known.
        mid: Option<Mid>,
        /// The compound packet's parts.
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    },
    /// A data channel (opened by either side) is open.
    DataChannelOpen {
        /// Its handle.
        channel: DataChannel,
        /// Its label.
        label: String,
    },
    /// A data channel closed (by either side); its handle is not used again.
    DataChannelClosed {
        /// Its handle.
        channel: DataChannel,
    },
    /// A message arrived on a data channel.
    Data {
        /// The channel.
        channel: DataChannel,
        /// The message.
        data: BytesMut,
    },
    /// The estimate of the bandwidth towards the remote side changed (bits per second; only on
    /// connections that send, with [`MediaConfig::congestion_control`]).
    TargetBitrate(u64),
}

/// How the NACK history of a connection that seals its own RTP keeps a packet it sent (send.rs,
/// `Kept`), for when the remote asks for it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A copy of the datagram, in a buffer the history reuses: for a payload no other connection
    /// shares (a 1:1 room's) or few do, which kept as parts would hold the publisher's buffer,
    /// gone cold, until its slot is taken again (the router's choice: `SHARED_HISTORY_FROM`).
    Copy,
    /// The packet's header fields and its payload, shared with the other subscribers' copies of
    /// it, sealed again on a NACK: no per-subscriber copy of the datagram in a fan-out.
    Parts,
}

/// A track this side sends (created with [`MediaPeer::add_local_track`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTrack {
    sender: RTCRtpSenderId,
    ssrc: u32,
}

impl LocalTrack {
    /// The SSRC every packet written to this track carries.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

#[derive(Debug, Clone)]
struct RemoteTrack {
    receiver: RTCRtpReceiverId,
    mid: Option<Mid>,
}

/// The RTP header extension carrying a sender's audio level (RFC 6464).
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The codecs the SFU negotiates, with their payload types: Opus, and the video codecs the
/// forwarder understands (keyframes and layer switches): VP8, VP9 profile 0, H.264 constrained
/// baseline (packetization mode 1, what browsers send) and AV1, as LiveKit's server does.
/// `rtc`'s default set adds G.722, PCMU, PCMA, VP9 profile 1, five more H.264 profiles and HEVC:
/// every m-line listed them all and every transceiver kept copies, ≈2.4 KB of SDP per m-line and
/// a fifth of the memory of a 1:1 room (heaptrack, S1).
///
/// RTX (RFC 4588) only where [`MediaConfig::rtx`] asks for it: on an SFU's publisher connections,
/// for limits of `rtc` 0.21 measured with Chromium (docs/SFU-MEDIA.md, "Loss"; the failing cases
/// are tests in `tests/it/rtx.rs`, but for the last two, read in `rtc`'s code). From a simulcast
/// publisher, `rtc` does not bind the repair streams to its interceptors (`bind_by_rid` skips
/// packets carrying `repaired-rtp-stream-id`: "TODO … rrid"), so the own read path opens them
/// itself (`read::OwnRead`) and `receive::ReceiveFeedback` counts their repairs (`rtc`'s NACK
/// generator counted only packets on a stream's own SSRC, never saw the repairs and kept asking:
/// Alice's retransmissions were 8.4 % of what she sent, against 0.6 %). Towards subscribers there
/// is none: the repairs do arrive, but Chromium reports the video in a receiver report whose first
/// block is about the repair stream, and `rtc` drops an RTCP packet whose first SSRC is no track's
/// (the allocator went 13-14 s without a report about the video); RTX packets from `rtc`'s
/// responder also carry no transport-wide sequence number, and its repair numbering restarts when
/// a reused SSRC is bound again. The SFU's own NACK responder (`resend::Resender`) resends on the
/// stream's own SSRC instead, each packet exactly as it first left, so that its SRTP nonce covers
/// one plaintext only.
fn register_codecs(media_engine: &mut MediaEngine, rtx: bool) -> Result<(), Error> {
    let codecs = sfu_codecs();
    let repairs = if rtx { rtx_codecs(&codecs) } else { Vec::new() };
    for (codec, kind) in codecs.into_iter().chain(repairs) {
        media_engine.register_codec(codec, kind)?;
    }
    Ok(())
}

/// An RTX format (RFC 4588) for each video codec of `codecs`, at the payload type after it, as
/// Chromium numbers them (VP8 96 and its RTX 97; `rtc` maps the offer's numbers either way).
fn rtx_codecs(
    codecs: &[(RTCRtpCodecParameters, RtpCodecKind)],
) -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
    codecs
        .iter()
        .filter(|(_, kind)| *kind == RtpCodecKind::Video)
        .map(|(codec, kind)| {
            let repair = RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: codec.rtp_codec.clock_rate,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={}", codec.payload_type),
                    rtcp_feedback: Vec::new(),
                },
                payload_type: codec.payload_type.wrapping_add(1),
            };
            (repair, *kind)
        })
        .collect()
}

/// One video m-section of an SDP, as far as RTX goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct VideoSection {
    mid: Option<String>,
    /// Its formats of the video codecs the SFU forwards (VP8, VP9, H.264, AV1).
    media: Vec<u8>,
    /// Its RTX formats (`a=rtpmap:<pt> rtx/<clock rate>`).
    repairs: Vec<u8>,
    /// Which format each RTX format repairs (`a=fmtp:<pt> apt=<pt>`), as (RTX, repaired).
    apts: Vec<(u8, u8)>,
}

impl VideoSection {
    /// Whether its sender resends on RTX whichever codec it sends: every format of a codec the
    /// SFU forwards has an RTX format repairing it. (libwebrtc gives a stream RTX only where
    /// its codec has an RTX format, and resends on the stream's own SSRC otherwise.)
    fn resends_on_rtx(&self) -> bool {
        !self.repairs.is_empty()
            && self.media.iter().all(|pt| {
                self.apts
                    .iter()
                    .any(|(rtx, apt)| apt == pt && self.repairs.contains(rtx))
            })
    }
}

/// Each video m-section of `sdp` that is not rejected: port 0 without `a=bundle-only` (RFC 8843
/// gives a bundled section port 0 with it).
fn video_sections(sdp: &str) -> Vec<VideoSection> {
    use consulta_sfu::forward::Codec;
    let mut sections = Vec::new();
    // The section being read, and whether its port was 0.
    let mut current: Option<(VideoSection, bool)> = None;
    let mut finish = |current: Option<(VideoSection, bool)>| {
        if let Some((section, false)) = current {
            sections.push(section);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            finish(current.take());
            let mut fields = media.split_whitespace();
            let video = fields.next() == Some("video");
            let port_zero = fields.next().is_some_and(|port| port == "0");
            current = video.then(|| (VideoSection::default(), port_zero));
            continue;
        }
        let Some((section, port_zero)) = &mut current else {
            continue;
        };
        if let Some(value) = line.strip_prefix("a=mid:") {
            section.mid = Some(value.to_owned());
        } else if line == "a=bundle-only" {
            *port_zero = false;
        } else if let Some((pt, format)) = line
            .strip_prefix("a=rtpmap:")
            .and_then(|rest| rest.split_once(' '))
            && let Ok(pt) = pt.parse::<u8>()
        {
            let name = format.split('/').next().unwrap_or_default();
            if name.eq_ignore_ascii_case("rtx") {
                section.repairs.push(pt);
            } else if matches!(
                Codec::from_mime(&format!("video/{name}")),
                Some(Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1)
            ) {
                section.media.push(pt);
            }
        } else if let Some((pt, parameters)) = line
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            && let Ok(pt) = pt.parse::<u8>()
            && let Some(apt) = parameters
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))
                .and_then(|apt| apt.parse::<u8>().ok())
        {
            section.apts.push((pt, apt));
        }
    }
    finish(current);
    sections
}

/// Whether a sender whose offer is `sdp` resends lost video on RTX streams (RFC 4588): in every
/// video m-section of the offer (whatever its direction), every format of a codec the SFU
/// forwards has an RTX format. A browser without RTX resends a packet under its own SRTP index,
/// with other header bytes (SECURITY.md), which AES-GCM cannot take: the SFU's router lets a
/// publisher's connection use GCM only where this holds, and the connection NACKs only the
/// m-lines both sides gave RTX so (`MediaPeer::repairs_negotiated`).
pub fn video_resends_on_rtx(sdp: &str) -> bool {
    video_sections(sdp).iter().all(VideoSection::resends_on_rtx)
}

/// The codec table [`register_codecs`] registers.
fn sfu_codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    use rtc::peer_connection::configuration::media_engine::{
        MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
    };
    use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;

    let codec = |mime: &str, clock_rate, channels, fmtp: &str, feedback, payload_type| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: feedback,
            },
            payload_type,
        }
    };
    let feedback = || {
        [
            ("goog-remb", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli"),
        ]
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .to_vec()
    };
    let opus = codec(
        MIME_TYPE_OPUS,
        48_000,
        2,
        "minptime=10;useinbandfec=1",
        vec![],
        111,
    );
    let video = [
        (MIME_TYPE_VP8, "", 96),
        (MIME_TYPE_VP9, "profile-id=0", 98),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            125,
        ),
        (MIME_TYPE_AV1, "profile-id=0", 41),
    ];
    std::iter::once((opus, RtpCodecKind::Audio))
        .chain(video.into_iter().map(|(mime, fmtp, payload_type)| {
            (
                codec(mime, 90_000, 0, fmtp, feedback(), payload_type),
                RtpCodecKind::Video,
            )
        }))
        .collect()
}

/// Gives `pc` the UDP socket address `local_addr` as its one (host) ICE candidate.
pub fn add_host_candidate(pc: &mut RTCPeerConnection, local_addr: SocketAddr) -> Result<(), Error> {
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local_addr.ip().to_string(),
            port: local_addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
    Ok(())
}

/// The extension id an SDP gives `uri` (`a=extmap:<id>[/direction] <uri>`).
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=extmap:")?;
        let (id, tail) = rest.split_once(' ')?;
        let found = tail.split_whitespace().next()? == uri;
        let id = id.split('/').next()?.parse().ok()?;
        found.then_some(id)
    })
}

/// Which half of the DTLS-SRTP keys the side that wrote `sdp` seals with (RFC 5764 §4.2: the
/// DTLS client's first), as `rtc` takes its role from the first `a=setup` of a media section
/// (RFC 5763 §5; `rtc-0.21.1` `RTCDtlsRole::from`, which reads no session-level one): `passive`
/// makes it the DTLS server (1); `active` the client (0); anything else (an offer's `actpass`)
/// leaves the role to this side, which takes the server's (`with_answering_dtls_role`), so the
/// client's too. `rtc` takes the role from the first remote description only.
fn remote_key_half(sdp: &str) -> usize {
    let passive = sdp
        .lines()
        .map(str::trim_end)
        .skip_while(|line| !line.starts_with("m="))
        .find(|line| *line == "a=setup" || line.starts_with("a=setup:"))
        .is_some_and(|line| line == "a=setup:passive");
    usize::from(passive)
}

/// How many media sections `sdp` has.
fn media_sections(sdp: &str) -> usize {
    sdp.lines().filter(|line| line.starts_with("m=")).count()
}

/// The ICE credentials (ufrag, password) `rtc` takes from a description: the session's,
/// or else those of the first section not marked inactive, or else the first inactive one's
/// (`rtc`'s `extract_ice_details`; a remote offer that changes them restarts its ICE).
fn ice_credentials(sdp: &str) -> (Option<String>, Option<String>) {
    #[derive(Default)]
    struct Section {
        ufrag: Option<String>,
        pwd: Option<String>,
        inactive: bool,
    }
    let mut sections = vec![Section::default()];
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            sections.push(Section::default());
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            section.ufrag.get_or_insert_with(|| ufrag.to_owned());
        } else if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
            section.pwd.get_or_insert_with(|| pwd.to_owned());
        } else if line == "a=inactive" {
            section.inactive = true;
        }
    }
    let mut sections = sections.into_iter();
    let session = sections.next().unwrap_or_default();
    let (active, inactive): (Vec<Section>, Vec<Section>) = sections.partition(|s| !s.inactive);
    let pick = |field: fn(&Section) -> Option<&String>| {
        field(&session)
            .or_else(|| active.iter().find_map(field))
            .or_else(|| inactive.first().and_then(field))
            .cloned()
    };
    (pick(|s| s.ufrag.as_ref()), pick(|s| s.pwd.as_ref()))
}

/// What tells a remote candidate (`candidate:…`, the text after `a=`) from the others `rtc`
/// holds, read as `rtc` reads it and compared as `rtc` compares them (`Candidate::equal`): its
/// network type, candidate type, address as written, port, TCP type and related address. Not its
/// text: libwebrtc writes ` ufrag …` after a candidate it trickles and leaves it out of the same
/// candidate copied into its later descriptions, and the foundation and priority name no path.
/// Nor anything coarser than `rtc`'s own comparison, or variants `rtc` keeps apart would pass
/// the bound as one. Text `rtc` cannot read is its own key (`rtc` refuses it anyway).
fn candidate_key(attribute: &str) -> String {
    let value = attribute.strip_prefix("candidate:").unwrap_or(attribute);
    match rtc::ice::candidate::unmarshal_candidate(value) {
        Ok(c) => format!(
            "{:?} {:?} {} {} {:?} {:?}",
            c.network_type(),
            c.candidate_type(),
            c.address(),
            c.port(),
            c.tcp_type(),
            c.related_address()
        ),
        Err(_) => attribute.to_owned(),
    }
}

/// The remote candidates `rtc` holds, as far as [`MAX_REMOTE_CANDIDATES`] needs to know.
#[derive(Debug, Default)]
struct RemoteCandidates {
    /// The ICE credentials of the last remote offer `rtc` took.
    credentials: (Option<String>, Option<String>),
    /// The candidates given since `rtc`'s ICE last started, trickled or written into a remote
    /// description, by [`candidate_key`]: `rtc` keeps a candidate given twice once, so a client
    /// that writes its candidates into every offer does not use up the bound.
    taken: HashSet<String>,
}

impl RemoteCandidates {
    /// The candidates `sdp` adds (to none, when it `restart`s ICE) as far as
    /// [`MAX_REMOTE_CANDIDATES`] allows, and, if it names more, `sdp` without their lines.
    fn in_sdp(&self, sdp: &str, restart: bool) -> (Vec<String>, Option<String>) {
        let mut room =
            MAX_REMOTE_CANDIDATES.saturating_sub(if restart { 0 } else { self.taken.len() });
        let mut new = HashSet::new();
        let mut left_out = false;
        let mut kept = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let candidate = line
                .trim_end()
                .strip_prefix("a=")
                .filter(|attribute| attribute.starts_with("candidate:"));
            if let Some(attribute) = candidate {
                let key = candidate_key(attribute);
                let known = (!restart && self.taken.contains(&key)) || new.contains(&key);
                if !known {
                    if room == 0 {
                        left_out = true;
                        continue;
                    }
                    room -= 1;
                    new.insert(key);
                }
            }
            kept.push_str(line);
        }
        (new.into_iter().collect(), left_out.then_some(kept))
    }

    /// [`RemoteCandidates::in_sdp`] on a remote description: its candidates past the bound are
    /// left out (logged).
    fn within_bound(&self, sdp: String, restart: bool) -> (Vec<String>, String) {
        match self.in_sdp(&sdp, restart) {
            (new, Some(kept)) => {
                tracing::info!(
                    taken = MAX_REMOTE_CANDIDATES,
                    "remote description names too many candidates: those past the bound left out"
                );
                (new, kept)
            }
            (new, None) => (new, sdp),
        }
    }
}

/// Settings for a [`MediaPeer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Which SRTP protection profiles the connection's DTLS-SRTP offers (see [`SrtpProfiles`]).
    /// Default: both GCM and AES-CM. The SFU's router chooses per connection, whatever a node's
    /// configuration says: AES-CM where browsers send media, GCM where it does.
    pub srtp: SrtpProfiles,
    /// Which inbound RTCP reaches [`MediaEvent::Rtcp`]: by default only keyframe requests, since
    /// `rtc`'s interceptors consume the rest (see the `feedback` module).
    pub rtcp_delivery: RtcpDelivery,
    /// Fault injection for tests: the router drops every Nth RTP datagram it receives and every
    /// Nth it sends (SRTP only; RTCP, STUN and DTLS pass; one count per direction for the whole
    /// router), so that NACK repair can be shown working with real clients. 0 (the default)
    /// drops nothing.
    pub drop_rtp_every: u32,
    /// Which way media flows on the connection; it decides which of `rtc`'s interceptors run.
    /// Default: both ways. The SFU's router sets it per connection (publisher connections receive,
    /// subscriber connections send), whatever a node's configuration says.
    pub direction: MediaDirection,
    /// Estimate the bandwidth towards the remote side on connections that send: transport-wide
    /// sequence numbers on every packet, the remote's TWCC feedback into `rtc`'s GCC estimator,
    /// and the result as [`MediaEvent::TargetBitrate`]. Default: true.
    pub congestion_control: bool,
    /// Fault injection for tests: the router polices the media it sends each subscriber to this
    /// many bits per second (a token bucket holding 500 ms; RTP only), as a weak downlink would.
    /// 0 (the default) polices nothing.
    pub police_downlink_bps: u64,
    /// How long after each subscriber connection is made [`MediaConfig::police_downlink_bps`]
    /// applies (a link that recovers); `None`, the default: for as long as it lasts.
    pub police_downlink_for: Option<Duration>,
    /// Fault injection for tests: each subscriber connection drops every Nth RTP datagram it
    /// sends (counted per connection, after [`MediaConfig::police_downlink_bps`]), for as long as
    /// it lasts: a link with steady moderate loss (25: 4 %). 0 (the default) drops nothing.
    pub drop_downlink_every: u32,
    /// Let ICE give the connection up as failed after 30 s without a word from the remote side
    /// (`rtc`'s default). Failing drops the connection's local candidates for good, so no later
    /// ICE restart can connect it again. The SFU's router turns it off: its participants'
    /// signalling decides when they are gone, and a client back after a long outage restarts
    /// ICE on a resume. Default: true.
    pub ice_fails: bool,
    /// Number, seal and send the RTP the connection sends itself (`send::OwnWrite`) instead of
    /// through `rtc`'s write path, and estimate the bandwidth from the remote's feedback itself
    /// (with `rtc`'s GCC) where [`MediaConfig::congestion_control`] is on. Off, or where the
    /// connection's keys fail their check, `rtc`'s path carries the media. Default: true.
    pub own_write_path: bool,
    /// Open the video the connection receives itself (`read::OwnRead`) once `rtc` has opened a
    /// stream's first packets, instead of passing every datagram through `rtc`'s read path. Off,
    /// or where no key opens them, `rtc`'s path opens everything. Default: true.
    pub own_read_path: bool,
    /// Negotiate RTX (RFC 4588) for each video codec. On a connection that only receives (an
    /// SFU's publisher connection), for the remote side to resend on, where the own read path is
    /// on: it opens a simulcast sender's repair streams, which `rtc` does not deliver
    /// (docs/SFU-MEDIA.md, "Loss"), and unwrapping them is the router's. The router sets it on
    /// publisher connections, whatever a node's configuration says, and on no subscriber
    /// connection (`register_codecs`). On a connection that sends (a test or bench client), RTX
    /// is only offered, as browsers offer it: its resender still resends on the stream's own
    /// SSRC, with the bytes it first sent. Default: false.
    pub rtx: bool,
}

/// The SRTP protection profiles a connection offers in DTLS-SRTP (RFC 5764).
///
/// SRTP takes its nonce from the stream's SSRC and packet index, so a packet sent again under its
/// own sequence number reuses it. With AES-GCM that is safe only if the bytes are the same: two
/// different plaintexts under one GCM nonce give away the authentication key, and with it the
/// power to forge packets. Browsers resend a NACKed packet that way when no RTX is negotiated,
/// each time with a new transport-wide sequence number in its header: measured with Chromium 156
/// (SECURITY.md). AES-CM with HMAC-SHA1 is not broken by that (the payload is the same, the
/// header is only authenticated, and HMAC is a PRF), so the connections that receive a browser's
/// media use it unless the browser resends on RTX ([`video_resends_on_rtx`]). GCM, 2–3 times
/// cheaper per packet, is kept for the connections the SFU sends on, where every index is sealed
/// over one plaintext only (`resend::Resender`), and for publishers that resend on RTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpProfiles {
    /// SRTP_AEAD_AES_128_GCM only: where every packet index is sealed once (what the SFU sends).
    Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 only: where a packet may come again under its index with other
    /// header bytes (what browsers send without RTX).
    AesCmSha1,
    /// SRTP_AEAD_AES_128_GCM, then SRTP_AES128_CM_HMAC_SHA1_80: whichever the other side takes
    /// (Chromium takes AES-CM when it may).
    #[default]
    Both,
}

impl SrtpProfiles {
    /// Each profile offered, as DTLS names it and as the SRTP layout the own read path may find
    /// the remote's keys under.
    fn profiles(
        self,
    ) -> Vec<(
        SrtpProtectionProfile,
        rtc::srtp::protection_profile::ProtectionProfile,
    )> {
        use rtc::srtp::protection_profile::ProtectionProfile;
        let gcm = (
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            ProtectionProfile::AeadAes128Gcm,
        );
        let cm = (
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ProtectionProfile::Aes128CmHmacSha1_80,
        );
        match self {
            Self::Gcm => vec![gcm],
            Self::AesCmSha1 => vec![cm],
            Self::Both => vec![gcm, cm],
        }
    }

    /// The profiles DTLS offers.
    fn offered(self) -> Vec<SrtpProtectionProfile> {
        self.profiles().into_iter().map(|(dtls, _)| dtls).collect()
    }

    /// The layouts the own read path may find the remote's keys under.
    fn layouts(self) -> Vec<rtc::srtp::protection_profile::ProtectionProfile> {
        self.profiles().into_iter().map(|(_, srtp)| srtp).collect()
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            srtp: SrtpProfiles::default(),
            rtcp_delivery: RtcpDelivery::default(),
            drop_rtp_every: 0,
            direction: MediaDirection::default(),
            congestion_control: true,
            police_downlink_bps: 0,
            police_downlink_for: None,
            drop_downlink_every: 0,
            ice_fails: true,
            own_write_path: true,
            own_read_path: true,
            rtx: false,
        }
    }
}

/// Where the bandwidth estimate of a sending connection starts, in bits per second. `rtc` sends no
/// probes, and its estimate rises only ≈8 % a second: starting at the 300 kbit/s browsers use would
/// hold a consultation's video at 180p for its first 20 s. Starting above what a 1:1 call sends
/// (720p + 360p + 180p is ≈2.3 Mbit/s at most) leaves every layer free until the link says otherwise:
/// delay or loss bring the estimate down to what arrives within the first seconds.
pub const INITIAL_ESTIMATE_BPS: f64 = 5_000_000.0;
/// The lowest bandwidth estimate: below it every track is on its lowest layer anyway.
pub const MIN_ESTIMATE_BPS: f64 = 100_000.0;
/// The highest bandwidth estimate.
pub const MAX_ESTIMATE_BPS: f64 = 50_000_000.0;

/// Which way media flows on a connection. In LiveKit's v0 protocol each connection carries media one
/// way: the client's publisher connection only into the SFU, its subscriber connection only out of
/// it.
///
/// Every packet passes every interceptor in `rtc`'s chain, each of which queues it and hands it on,
/// whether or not it has anything to do with the packet. A one-way connection therefore runs only
/// the interceptors of its direction: receiving, the receiver reports where the own read path is
/// off (TWCC feedback and NACKs, and receiver reports where it is on, are
/// `receive::ReceiveFeedback`'s); sending, the NACK responder (`resend::Resender`), sender reports
/// and the keyframe-request delivery. That
/// takes 7–18 % off `rtc`'s per-packet pipeline measured in memory (`consulta-sfu-bench pipeline`);
/// on a node, where `rtc` is about half of a packet's cost, it is within the end-to-end runs'
/// noise (docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaDirection {
    /// Media both ways: every interceptor (an echo, a test peer).
    #[default]
    Both,
    /// Media only arrives (an SFU's publisher connection).
    ReceiveOnly,
    /// Media only leaves (an SFU's subscriber connection). Inbound RTCP still arrives: the remote
    /// side's reports, NACKs and keyframe requests.
    SendOnly,
}

impl MediaDirection {
    fn receives(self) -> bool {
        self != Self::SendOnly
    }

    fn sends(self) -> bool {
        self != Self::ReceiveOnly
    }
}

/// One server-side peer connection on one UDP socket.
pub struct MediaPeer {
    rtc: RTCPeerConnection,
    local_addr: SocketAddr,
    /// `rtc` names incoming media by its track id; an SFU needs the receiver and the mid.
    remote_tracks: HashMap<String, RemoteTrack>,
    /// Which receiver an incoming SSRC belongs to (for keyframe requests).
    ssrc_receivers: HashMap<u32, RTCRtpReceiverId>,
    /// Events produced while taking reads out of `rtc`, to hand out in order.
    pending: std::collections::VecDeque<MediaEvent>,
    /// Remote ICE candidates that arrived before the remote description.
    early_candidates: Vec<RTCIceCandidateInit>,
    /// The remote candidates `rtc` holds ([`MAX_REMOTE_CANDIDATES`]).
    remote_candidates: RemoteCandidates,
    /// The negotiated id of the audio-level extension on incoming audio.
    audio_level_id: Option<u8>,
    /// The payload type each local track sends each codec it was asked to send with (`None`: not
    /// negotiated), and the transport-wide sequence number's extension id, as last negotiated
    /// ([`MAX_SENT_CODECS`] codecs a track). Looking it up in `rtc` clones the sender's whole
    /// parameter set: once per packet when a publisher alternates codecs, for each subscriber's
    /// copy, if only the last were kept. Emptied by every offer/answer.
    payload_types: HashMap<RTCRtpSenderId, SentCodecs>,
    /// How each incoming SSRC's packets are tagged for each payload type, as last looked up: the
    /// lookup clones the receiver's whole parameter set. Emptied by every offer/answer.
    incoming: HashMap<(u32, u8), Arc<StreamTag>>,
    /// Where the feedback interceptor leaves the congestion controller's estimate (bits per
    /// second, 0 before the first), on connections that estimate.
    estimate: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The estimate last reported as [`MediaEvent::TargetBitrate`].
    last_estimate: u64,
    /// The own write path ([`MediaConfig::own_write_path`]), where it applies.
    own: Option<crate::send::OwnWrite>,
    /// What it resent for NACKs, until [`take_resent`](Self::take_resent).
    resent: u64,
    /// Of that, what was sealed again, until [`take_resealed`](Self::take_resealed).
    resealed: u64,
    /// Datagrams taken out of `rtc` early (to check the own path's keys), to hand out first.
    taken: std::collections::VecDeque<Transmit>,
    /// Where `rtc` last sent something other than a STUN check (checks go to every candidate
    /// pair; SRTCP and DTLS to the selected one): where the own path's datagrams go.
    selected: Option<SocketAddr>,
    /// Transport-wide feedback and NACKs about what arrives, on connections that receive.
    receive: Option<crate::receive::ReceiveFeedback>,
    /// The own read path ([`MediaConfig::own_read_path`]), where it applies.
    read: Option<crate::read::OwnRead<Arc<StreamTag>>>,
    /// RTX is registered ([`MediaConfig::rtx`]).
    rtx: bool,
    /// The connection takes only SRTP_AEAD_AES_128_GCM: a video stream is NACKed only where its
    /// m-line negotiated RTX, so that no packet is resent under its own SRTP index (GCM's nonce
    /// over other header bytes).
    nacks_need_rtx: bool,
    /// The video m-lines to whose RTX formats both the last offer and its answer agreed.
    rtx_mids: crate::FastSet<Mid>,
    /// The video m-lines ever negotiated without that agreement: they never join `rtx_mids`.
    unrepaired_mids: crate::FastSet<Mid>,
    /// How far `rtc` was polled since it was last called ([`Polled`]).
    polled: Polled,
    /// The connection connected once (its DTLS handshake is done).
    connected: bool,
    /// ICE has a working pair now (a connection still connecting past it is in DTLS).
    ice_connected: bool,
    /// ICE came up (again) since the last [`handle_timeout`](Self::handle_timeout), which
    /// starts the handshake's stall clock again (`handshake::Flights::ice_connected`).
    ice_came_up: bool,
    /// The DTLS handshake's flights, to send this side's last one again when the peer repeats
    /// its own ([`crate::handshake`]); `None` once connected.
    flights: Option<crate::handshake::Flights>,
    /// Every inbound RTCP packet is an event ([`RtcpDelivery::All`]).
    rtcp_to_application: bool,
    /// The connection offers only SRTP_AES128_CM_HMAC_SHA1_80, whose SRTCP `rtc` takes without
    /// checking the authentication tag when its E flag says it is not encrypted: such datagrams
    /// are dropped before `rtc` sees them (WebRTC always encrypts SRTCP).
    aes_cm_only: bool,
    /// The SSRCs of the RTP and RTCP handed to `rtc` so far, unauthenticated by the SFU and
    /// authenticated ([`MAX_SSRCS_TO_RTC`] each at most).
    ssrcs_to_rtc: [crate::FastSet<u32>; 2],
    /// Whether each set filled (and it was said).
    ssrcs_to_rtc_full: [bool; 2],
    /// Datagrams of transport-wide feedback opened here since [`take_feedback_opened_here`]
    /// (Self::take_feedback_opened_here) was last called.
    feedback_opened_here: u64,
    /// NACK packets written to the remote, and the packets they asked for (each ask counted),
    /// since [`take_nacks_sent`](Self::take_nacks_sent) was last called.
    nacks_sent: (u64, u64),
}

/// How far a connection's `rtc` was polled since anything was last handed to it (a datagram, a
/// timer, a packet or report to write, a change of description or tracks).
///
/// Polling `rtc` walks its whole pipeline: every handler's queues for events and reads, for
/// datagrams, and for timers. On the own write path a forwarded packet never enters `rtc`, yet the
/// router polled its subscriber connection's `rtc` three times for each one, to find nothing new.
/// So once `rtc` was polled empty twice in a row, in the order the router polls (events and reads,
/// then datagrams, then its timer), it is not polled again until something is handed to it, and
/// its timer is remembered. Twice: a sweep can queue something inside `rtc` that only the next
/// sweep brings out (a handler's event raised while it takes a write). Debug builds, which every
/// test runs, poll `rtc` anyway while it is left alone and fail if anything comes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Polled {
    /// Sweeps that found nothing, since something was handed to `rtc` or came out of it.
    empty_sweeps: u8,
    /// How far the current sweep got without finding anything.
    stage: Stage,
    /// `rtc`'s timer, once it is not polled.
    deadline: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    /// Events and reads came out empty.
    Read,
    /// Then datagrams.
    Written,
}

/// Sweeps that must find nothing before `rtc` is left unpolled (see [`Polled`]).
const EMPTY_SWEEPS: u8 = 2;

impl Polled {
    const BUSY: Self = Self {
        empty_sweeps: 0,
        stage: Stage::Start,
        deadline: None,
    };

    /// Whether `rtc` has nothing new to give.
    fn quiet(&self) -> bool {
        self.empty_sweeps >= EMPTY_SWEEPS
    }

    /// Something came out of `rtc`: the sweeps start over.
    fn found(&mut self) {
        *self = Self::BUSY;
    }

    /// Events and reads came out empty.
    fn read(&mut self) {
        self.stage = Stage::Read;
    }

    /// Datagrams came out empty.
    fn written(&mut self) {
        if self.stage == Stage::Read {
            self.stage = Stage::Written;
        }
    }

    /// The timer was polled (`deadline`), which ends a sweep.
    fn timed(&mut self, deadline: Option<Instant>) {
        if self.stage == Stage::Written {
            self.empty_sweeps += 1;
            self.deadline = deadline;
        }
        self.stage = Stage::Start;
    }
}

/// What the connection knows of one incoming SSRC's stream, as [`IncomingRtp::tag`]. Looked up
/// once per stream (and again when its payload type changes) and shared by its packets: copying
/// its strings per packet was three allocations each.
#[derive(Debug, Clone)]
pub struct StreamTag {
    /// The sender's track id (the second part of `a=msid`; livekit-client's `cid`).
    pub track_id: String,
    /// The m-line it arrives on.
    pub mid: Option<Mid>,
    /// The simulcast layer, when the sender uses rids.
    pub rid: Option<Rid>,
    /// Audio or video.
    pub kind: Option<MediaKind>,
    /// The codec's MIME type (e.g. `video/VP8`) from the negotiated payload type.
    pub mime_type: Option<String>,
    /// The payload type the rest was looked up for.
    payload_type: u8,
    /// The MIME type is RTX's ([`StreamTag::is_repair`]), looked at once.
    repair: bool,
}

impl StreamTag {
    /// Whether the stream carries retransmissions of another (RTX, RFC 4588).
    pub fn is_repair(&self) -> bool {
        self.repair
    }

    /// What the connection's reports make of the stream's packets.
    fn noted(&self) -> crate::receive::Noted {
        use crate::receive::Noted;
        match self.kind {
            Some(MediaKind::Video) => Noted::Video,
            // Opus is the one audio codec the SFU negotiates (`sfu_codecs`).
            Some(kind @ MediaKind::Audio) => Noted::Audio(kind.clock_rate()),
            None => Noted::Other,
        }
    }
}

impl crate::read::Layer for Arc<StreamTag> {
    fn layer(&self) -> (Option<&str>, Option<&str>) {
        (
            self.mid.as_ref().map(Mid::as_str),
            self.rid.as_ref().map(Rid::as_str),
        )
    }

    fn is_repair(&self) -> bool {
        StreamTag::is_repair(self)
    }

    fn repair(&self, payload_type: u8) -> Self {
        Arc::new(StreamTag {
            track_id: self.track_id.clone(),
            mid: self.mid.clone(),
            rid: self.rid.clone(),
            kind: Some(MediaKind::Video),
            mime_type: Some(
                rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX.to_owned(),
            ),
            payload_type,
            repair: true,
        })
    }
}

/// Whether `datagram` is SRTCP (RFC 7983, RFC 5761) laid out for AES-CM (RFC 3711: the E flag
/// and index, then a 10-byte tag) whose E flag is clear: sent unencrypted, which `rtc`'s AES-CM
/// cipher returns without checking its tag.
fn unencrypted_aes_cm_srtcp(datagram: &[u8]) -> bool {
    crate::mux::is_rtcp(datagram)
        && crate::mux::srtcp_trailer(datagram, 10).is_some_and(|word| word >> 31 == 0)
}

/// SSRCs and payload types whose tags are kept per connection (simulcast layers of a few
/// tracks, with their repair streams); past this the cache starts over rather than grow for a
/// sender that cycles SSRCs or payload types.
const MAX_INCOMING_TAGS: usize = 64;

/// Codecs whose payload types [`MediaPeer::write_rtp`] keeps per local track: more than a
/// publisher's m-line negotiates, whose codecs are all the router asks a track to send.
const MAX_SENT_CODECS: usize = 16;

/// What the SFU's own screening made of a datagram before `rtc` may be handed it.
enum Screened {
    /// Handled here, or to be dropped with the error.
    Done(Result<(), Error>),
    /// `rtc`'s to handle, and authenticated here: the remote's own.
    Genuine,
    /// `rtc`'s to handle; not known to be the remote's.
    Unknown,
}

/// The codecs a local track was asked to send: the last one inline, where a packet's copy finds it
/// with no further memory to read (the cost of a forwarded packet is mostly such first reads of
/// a connection's state), and the others apart ([`MAX_SENT_CODECS`] in all).
#[derive(Debug)]
struct SentCodecs {
    last: SentCodec,
    others: Vec<SentCodec>,
}

impl SentCodecs {
    /// The codec `mime_type`, made the last one.
    fn find(&mut self, mime_type: &str) -> Option<&SentCodec> {
        if !self.last.mime_type.eq_ignore_ascii_case(mime_type) {
            let at = self
                .others
                .iter()
                .position(|c| c.mime_type.eq_ignore_ascii_case(mime_type))?;
            let other = self.others.get_mut(at)?;
            std::mem::swap(&mut self.last, other);
        }
        Some(&self.last)
    }

    /// Adds `codec` as the last one, forgetting the oldest of the others past the bound.
    fn add(&mut self, codec: SentCodec) {
        if self.others.len() + 1 >= MAX_SENT_CODECS {
            self.others.remove(0);
        }
        self.others.push(std::mem::replace(&mut self.last, codec));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        1 + self.others.len()
    }
}

/// How a local track sends one codec: its MIME type, the payload type negotiated for it (`None`:
/// not negotiated), and the transport-wide sequence number's extension id.
#[derive(Debug)]
struct SentCodec {
    mime_type: String,
    payload_type: Option<u8>,
    twcc_id: Option<u8>,
}

impl fmt::Debug for MediaPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPeer")
            .field("local_addr", &self.local_addr)
            .field("remote_tracks", &self.remote_tracks.len())
            .finish_non_exhaustive()
    }
}

impl MediaPeer {
    /// A peer connection that will use the UDP socket bound at `local_addr`, advertised as its only
    /// (host) ICE candidate. Registers the default codecs (Opus, VP8, VP9, H264, AV1...), header
    /// extensions and interceptors (NACK, RTCP reports, TWCC).
    ///
    /// Uses [`MediaConfig::default`]: SRTP with AEAD-AES-128-GCM or AES-CM with HMAC-SHA1.
    pub fn new(local_addr: SocketAddr, now: Instant) -> Result<Self, Error> {
        Self::with_config(local_addr, MediaConfig::default(), now)
    }

    /// Like [`new`](Self::new), with explicit settings.
    pub fn with_config(
        local_addr: SocketAddr,
        config: MediaConfig,
        now: Instant,
    ) -> Result<Self, Error> {
        Self::with_crypto(local_addr, config, None, now)
    }

    /// Like [`with_config`](Self::with_config), with the cryptography (DTLS, SRTP, ICE's
    /// message integrity, randomness) from `crypto` instead of `rtc`'s default provider (ring).
    pub fn with_crypto(
        local_addr: SocketAddr,
        config: MediaConfig,
        crypto: Option<Arc<dyn rtc::crypto::RTCCryptoProvider>>,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut media_engine = MediaEngine::default();
        let direction = config.direction;
        // The own write and read paths need the connection's keys: its provider keeps them.
        let own_write = direction.sends() && config.own_write_path && crypto.is_none();
        let own_read = direction.receives() && config.own_read_path && crypto.is_none();
        // Repair streams are opened on the own read path only.
        let rtx = config.rtx && (direction != MediaDirection::ReceiveOnly || own_read);
        register_codecs(&mut media_engine, rtx)?;
        configure_simulcast_extension_headers(&mut media_engine)?;
        // `rtc`'s default chain (`register_default_interceptors`) but for the two NACK ends, for
        // the direction the media flows (see `MediaDirection`); the codecs already carry the `nack`
        // and `nack pli` feedback. TWCC's extension and feedback are negotiated either way: its
        // interceptor only answers media that arrives.
        let own_keys = (own_write || own_read).then(crate::keytap::KeyTap::new);
        let crypto = match &own_keys {
            Some(keys) => Some(Arc::clone(keys) as Arc<dyn rtc::crypto::RTCCryptoProvider>),
            None => crypto,
        };
        let mut registry = rtc::interceptor::Registry::new();
        let estimate = (direction.sends() && config.congestion_control)
            .then(|| Arc::new(std::sync::atomic::AtomicU64::new(0)));
        if direction.sends() || config.rtcp_delivery == RtcpDelivery::All {
            let mut delivery = crate::feedback::KeyframeRequestDelivery::new(
                config.rtcp_delivery,
                estimate.clone(),
            );
            if own_write && estimate.is_some() {
                delivery = delivery.with_transport_feedback();
            }
            registry = registry.with(crate::feedback::SLOT.into(), delivery);
        }
        if direction.sends() {
            registry = registry.with(
                crate::resend::SLOT.into(),
                crate::resend::Resender::new(NACK_HISTORY),
            );
            // The own write path reports on what it sends; `rtc`'s reports would not see it.
            if !own_write {
                registry = registry.with(Slot::SenderReport, SenderReportBuilder::new().build());
            }
        }
        // The own write path numbers and estimates itself.
        if estimate.is_some() && !own_write {
            // No pacer: the SFU forwards what publishers send as it arrives, and the estimate is
            // applied by choosing layers (`consulta_sfu::bandwidth`), not by queueing packets.
            registry = registry
                .with(Slot::TwccSender, TwccSenderBuilder::new().build())
                .with(
                    Slot::CongestionControl,
                    CongestionControlBuilder::new(Gcc::new(
                        INITIAL_ESTIMATE_BPS,
                        MIN_ESTIMATE_BPS,
                        MAX_ESTIMATE_BPS,
                    ))
                    .build(),
                );
        }
        // Negotiates TWCC (its extension and feedback); `receive::ReceiveFeedback` answers it.
        let _ = configure_twcc_receiver_only(rtc::interceptor::Registry::new(), &mut media_engine)?;
        // Transport-wide feedback and NACKs are `receive::ReceiveFeedback`'s, which sees what
        // the own read path opens too; so are the receiver reports where that path may open
        // audio (it takes the sender reports they refer to out of the SRTCP it opens too).
        if direction.receives() && !own_read {
            registry = registry
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                .with(
                    crate::feedback::REPORT_FILTER_SLOT.into(),
                    crate::feedback::VideoReportFilter::default(),
                );
        }
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )?;
        let mut setting_engine = SettingEngineBuilder::new().with_sctp_max_message_size(
            SctpMaxMessageSize::Bounded(consulta_sfu::data::SCTP_MAX_MESSAGE_BYTES as u32),
        );
        setting_engine = setting_engine.with_srtp_protection_profiles(config.srtp.offered());
        if let Some(crypto) = crypto {
            setting_engine = setting_engine.with_crypto_provider(crypto);
        }
        if !config.ice_fails {
            // A zero failed timeout never fails (rtc-ice); `None` keeps the other defaults.
            setting_engine = setting_engine.with_ice_timeouts(None, Some(Duration::ZERO), None);
        }
        let setting_engine = setting_engine
            // Measured with Chromium 156: the DTLS role does not change which profile wins (the
            // client's first choice, AES_CM_128_HMAC_SHA1_80), so the role is kept as the
            // conventional SFU one: the answering server side is DTLS server.
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        add_host_candidate(&mut pc, local_addr)?;
        Ok(Self {
            rtc: pc,
            receive: direction
                .receives()
                .then(|| crate::receive::ReceiveFeedback::new(own_read)),
            polled: Polled::BUSY,
            rtx,
            nacks_need_rtx: config.srtp == SrtpProfiles::Gcm,
            rtx_mids: crate::FastSet::default(),
            unrepaired_mids: crate::FastSet::default(),
            connected: false,
            ice_connected: false,
            ice_came_up: false,
            flights: Some(crate::handshake::Flights::default()),
            rtcp_to_application: config.rtcp_delivery == RtcpDelivery::All,
            aes_cm_only: config.srtp == SrtpProfiles::AesCmSha1,
            ssrcs_to_rtc: Default::default(),
            ssrcs_to_rtc_full: [false; 2],
            feedback_opened_here: 0,
            nacks_sent: (0, 0),
            local_addr,
            remote_tracks: HashMap::new(),
            ssrc_receivers: HashMap::new(),
            pending: Default::default(),
            early_candidates: Vec::new(),
            remote_candidates: RemoteCandidates::default(),
            audio_level_id: None,
            payload_types: HashMap::new(),
            incoming: HashMap::new(),
            estimate,
            last_estimate: 0,
            read: own_keys
                .as_ref()
                .filter(|_| own_read)
                .map(|keys| crate::read::OwnRead::new(Arc::clone(keys), config.srtp.layouts())),
            own: own_keys.filter(|_| own_write).map(|keys| {
                let estimation = config.congestion_control.then(|| {
                    crate::send::Estimation::new(
                        INITIAL_ESTIMATE_BPS,
                        MIN_ESTIMATE_BPS,
                        MAX_ESTIMATE_BPS,
                    )
                });
                crate::send::OwnWrite::new(keys, estimation)
            }),
            resent: 0,
            resealed: 0,
            taken: std::collections::VecDeque::new(),
            selected: None,
        })
    }

    /// `rtc`, to hand something to: it is polled again.
    fn pc(&mut self) -> &mut RTCPeerConnection {
        self.polled = Polled::BUSY;
        &mut self.rtc
    }

    /// The local ICE username fragment (for demultiplexing a shared UDP port), once a local
    /// description exists.
    pub fn local_ufrag(&self) -> Option<String> {
        self.rtc
            .local_description()
            .and_then(|d| ice_credentials(&d.sdp).0)
    }

    /// Adds a trickled remote candidate (`RTCIceCandidateInit` JSON). Candidates that arrive
    /// before the remote description are kept until it is applied.
    pub fn add_remote_candidate(&mut self, candidate_init: &str) -> Result<(), Error> {
        let init: RTCIceCandidateInit =
            serde_json::from_str(candidate_init).map_err(|_| Error::BadCandidate)?;
        if self.rtc.remote_description().is_none() {
            if self.early_candidates.len() < MAX_EARLY_CANDIDATES {
                self.early_candidates.push(init);
            }
            return Ok(());
        }
        self.take_remote_candidate(init)
    }

    /// Hands `init` to `rtc`, within [`MAX_REMOTE_CANDIDATES`].
    fn take_remote_candidate(&mut self, init: RTCIceCandidateInit) -> Result<(), Error> {
        let text = init.candidate.trim();
        let key = candidate_key(text.strip_prefix("a=").unwrap_or(text));
        // `rtc` holds it already: given again, it would only add an entry to `rtc`'s statistics,
        // which are never dropped.
        if self.remote_candidates.taken.contains(&key) {
            return Ok(());
        }
        if self.remote_candidates.taken.len() >= MAX_REMOTE_CANDIDATES {
            return Err(Error::TooManyCandidates);
        }
        self.pc().add_remote_candidate(init)?;
        self.remote_candidates.taken.insert(key);
        Ok(())
    }

    fn apply_early_candidates(&mut self) {
        for init in std::mem::take(&mut self.early_candidates) {
            if let Err(error) = self.take_remote_candidate(init) {
                // mDNS (`.local`) host candidates cannot be resolved here; the browser's checks
                // still reach us and become peer-reflexive candidates.
                tracing::debug!(%error, "remote candidate ignored");
            }
        }
    }

    /// Opens a data channel negotiated in-band (DCEP). `max_retransmits: Some(0)` with
    /// `ordered: false` makes it lossy.
    pub fn create_data_channel(
        &mut self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> Result<DataChannel, Error> {
        let channel = self.pc().create_data_channel(
            label,
            Some(RTCDataChannelInit {
                ordered,
                max_retransmits,
                ..Default::default()
            }),
        )?;
        Ok(DataChannel(channel.id()))
    }

    /// Closes a data channel (the remote is told; [`MediaEvent::DataChannelClosed`] follows once
    /// it is closed).
    pub fn close_data_channel(&mut self, channel: DataChannel) -> Result<(), Error> {
        let mut channel = self
            .pc()
            .data_channel(channel.0)
            .ok_or(Error::UnknownDataChannel)?;
        channel.close()?;
        Ok(())
    }

    /// Bytes queued or sent on `channel` that the remote has not acknowledged (`rtc`'s count,
    /// which SCTP lowers as the remote acknowledges or it gives up on a lossy message).
    pub fn data_outstanding(&mut self, channel: DataChannel) -> Result<usize, Error> {
        // A look that hands `rtc` nothing: not through `pc`, which would have it polled again.
        self.rtc
            .data_channel(channel.0)
            .map(|c| c.outstanding_bytes())
            .ok_or(Error::UnknownDataChannel)
    }

    /// Sends a binary message on an open data channel, unless it has [`DATA_QUEUE_BYTES`] or more
    /// outstanding.
    pub fn send_data(
        &mut self,
        channel: DataChannel,
        data: BytesMut,
        now: Instant,
    ) -> Result<(), Error> {
        let mut channel = self
            .pc()
            .data_channel(channel.0)
            .ok_or(Error::UnknownDataChannel)?;
        if channel.outstanding_bytes() >= DATA_QUEUE_BYTES {
            return Err(Error::DataBacklogged);
        }
        channel.send(now, data)?;
        Ok(())
    }

    /// Stops sending `track` (its m-line becomes inactive at the next negotiation).
    pub fn remove_local_track(&mut self, track: LocalTrack) -> Result<(), Error> {
        self.pc().remove_track(track.sender)?;
        self.payload_types.remove(&track.sender);
        if let Some(own) = &mut self.own {
            own.pause_reports(track.ssrc);
        }
        Ok(())
    }

    /// Adds a track this side sends, with the given SSRC and msid (`stream_id track_id`). Call before
    /// [`accept_offer`](Self::accept_offer) to answer a sendrecv m-line with it, or before
    /// [`create_offer`](Self::create_offer) to offer it.
    ///
    /// `mime_type` names the codec the track will carry (`video/VP8`, `audio/opus`; empty for the
    /// kind's default). `rtc` binds the sender's stream to its interceptors (the NACK responder's
    /// history, sender reports) only when this matches a negotiated codec: without it a subscriber's
    /// NACKs went unanswered and it never got a sender report.
    pub fn add_local_track(
        &mut self,
        kind: MediaKind,
        mime_type: &str,
        stream_id: &str,
        track_id: &str,
        ssrc: u32,
    ) -> Result<LocalTrack, Error> {
        // The codec the track carries, as registered: `rtc` binds the sender's stream to its
        // interceptors only when it matches a negotiated codec. A codec the SFU does not negotiate
        // (a client may announce anything) falls back to the kind's default; such a track cannot
        // have been published to us anyway.
        let default_mime = match kind {
            MediaKind::Video => "video/VP8",
            MediaKind::Audio => "audio/opus",
        };
        let codecs = sfu_codecs();
        let find = |mime: &str| {
            codecs
                .iter()
                .find(|(c, _)| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .map(|(c, _)| c.rtp_codec.clone())
        };
        let Some(codec) = find(mime_type).or_else(|| find(default_mime)) else {
            return Err(Error::CodecNotNegotiated(mime_type.to_owned()));
        };
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            kind.to_rtc(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let sender = self.pc().add_track(track)?;
        // `rtc` narrows a new transceiver's codec list to the track's codec, and keeps that list
        // when it reuses the transceiver for a later track, which may carry another codec. Worse,
        // once an answer has named only that codec, `rtc`'s media engine keeps only the
        // negotiated codecs for the whole connection, and a later VP9 or H.264 track could not
        // be added at all. So every m-line offers all the SFU's codecs of its kind (an empty
        // list means those); it costs ≈70 KiB per 1:1 room in SDP copies.
        let transceiver = self
            .pc()
            .get_transceivers()
            .collect::<Vec<_>>()
            .into_iter()
            .find(|&id| {
                self.pc()
                    .rtp_transceiver(id)
                    .is_some_and(|t| t.sender() == Some(sender))
            });
        if let Some(mut transceiver) = transceiver.and_then(|id| self.pc().rtp_transceiver(id)) {
            transceiver.set_codec_preferences(Vec::new())?;
        }
        if let Some(own) = &mut self.own {
            own.add_stream(ssrc, kind.clock_rate());
        }
        Ok(LocalTrack { sender, ssrc })
    }

    /// Applies the remote offer and returns the local answer's SDP (with the host candidate).
    pub fn accept_offer(&mut self, offer_sdp: String, now: Instant) -> Result<String, Error> {
        let sections = media_sections(&offer_sdp);
        if sections > MAX_MEDIA_SECTIONS {
            return Err(Error::TooManySections(sections));
        }
        let credentials = ice_credentials(&offer_sdp);
        // New credentials restart `rtc`'s ICE, which forgets the remote's candidates.
        let restart = credentials != self.remote_candidates.credentials;
        let (candidates, offer_sdp) = self.remote_candidates.within_bound(offer_sdp, restart);
        self.audio_level_id = extmap_id(&offer_sdp, AUDIO_LEVEL_URI);
        self.negotiated(&offer_sdp);
        let remote_half = remote_key_half(&offer_sdp);
        let offered = self.rtx_sections(&offer_sdp);
        self.payload_types.clear();
        self.incoming.clear();
        self.pc()
            .set_remote_description(now, RTCSessionDescription::offer(offer_sdp)?)?;
        if let Some(read) = &mut self.read {
            read.set_remote_half(remote_half);
        }
        if restart {
            self.remote_candidates = RemoteCandidates {
                credentials,
                taken: HashSet::new(),
            };
        }
        self.remote_candidates.taken.extend(candidates);
        self.apply_early_candidates();
        let answer = self.pc().create_answer(None)?;
        self.pc().set_local_description(now, answer)?;
        let answer = self.local_sdp()?;
        self.repairs_negotiated(&offered, &answer);
        Ok(answer)
    }

    /// Creates and applies a local offer and returns its SDP (with the host candidate).
    pub fn create_offer(&mut self, now: Instant) -> Result<String, Error> {
        self.create_offer_with(now, false)
    }

    /// [`MediaPeer::create_offer`], with fresh ICE credentials when `restart_ice` (RFC 8445 §9): the
    /// remote end checks its paths again, as after a network change.
    pub fn create_offer_with(&mut self, now: Instant, restart_ice: bool) -> Result<String, Error> {
        use rtc::peer_connection::configuration::RTCOfferOptions;

        let options = restart_ice.then_some(RTCOfferOptions { ice_restart: true });
        let offer = self.pc().create_offer(options)?;
        self.negotiated(&offer.sdp);
        self.payload_types.clear();
        self.incoming.clear();
        self.pc().set_local_description(now, offer)?;
        if restart_ice {
            // `rtc` restarted its ICE and forgot the remote's candidates.
            self.remote_candidates.taken.clear();
        }
        self.local_sdp()
    }

    /// Applies the remote answer to our offer.
    pub fn accept_answer(&mut self, answer_sdp: String, now: Instant) -> Result<(), Error> {
        let sections = media_sections(&answer_sdp);
        let offered_sections = self
            .rtc
            .local_description()
            .map_or(0, |offer| media_sections(&offer.sdp));
        if sections > offered_sections {
            return Err(Error::TooManySections(sections));
        }
        // An answer's new credentials do not restart `rtc`'s ICE: its candidates add up.
        let (candidates, answer_sdp) = self.remote_candidates.within_bound(answer_sdp, false);
        self.negotiated(&answer_sdp);
        let remote_half = remote_key_half(&answer_sdp);
        let offered = if self.rtx {
            self.local_sdp()
                .map(|offer| self.rtx_sections(&offer))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.payload_types.clear();
        self.incoming.clear();
        self.pc()
            .set_remote_description(now, RTCSessionDescription::answer(answer_sdp.clone())?)?;
        if let Some(read) = &mut self.read {
            read.set_remote_half(remote_half);
        }
        self.remote_candidates.taken.extend(candidates);
        self.apply_early_candidates();
        self.repairs_negotiated(&offered, &answer_sdp);
        Ok(())
    }

    /// The video sections of `sdp`, on a connection with RTX registered; none otherwise (only
    /// such a connection has repair streams to name).
    fn rtx_sections(&self, sdp: &str) -> Vec<VideoSection> {
        if self.rtx {
            video_sections(sdp)
        } else {
            Vec::new()
        }
    }

    /// Takes what the receive side needs from a description either side made.
    fn negotiated(&mut self, sdp: &str) {
        if let Some(receive) = &mut self.receive {
            receive.set_transport_cc(extmap_id(sdp, rtc::sdp::extmap::TRANSPORT_CC_URI));
        }
    }

    /// Takes what an applied offer (its video sections, `offered`) and its `answer` agreed on
    /// about RTX: which m-lines resend on it (and so may be NACKed on a GCM connection), and what
    /// names the remote's repair streams (the answer's payload types and extension ids, which the
    /// sender uses). `rtc` may answer RTX where the offer had none, or the reverse (it takes its
    /// answer's video codecs from the first video m-line it negotiated): only what both say counts.
    fn repairs_negotiated(&mut self, offered: &[VideoSection], answer: &str) {
        let answered = self.rtx_sections(answer);
        let (agreed, unagreed): (Vec<&VideoSection>, Vec<&VideoSection>) =
            answered.iter().partition(|section| {
                section.resends_on_rtx()
                    && offered
                        .iter()
                        .any(|o| o.mid == section.mid && o.resends_on_rtx())
            });
        // An m-line negotiated once without RTX never joins: its sender may still send as
        // before until it has applied the answer.
        self.unrepaired_mids.extend(
            unagreed
                .iter()
                .filter_map(|section| section.mid.clone().map(Mid)),
        );
        self.rtx_mids = agreed
            .iter()
            .filter_map(|section| section.mid.clone().map(Mid))
            .filter(|mid| !self.unrepaired_mids.contains(mid))
            .collect();
        // The gate is asked once per stream: after a description, again (a stream may have
        // moved to another m-line); the NACKs still due for the numbers missing so far, and for
        // a gap across the forgetting, are skipped.
        if self.nacks_need_rtx
            && let Some(receive) = &mut self.receive
        {
            receive.forget_gaps();
        }
        if let Some(read) = &mut self.read {
            let mut payload_types: Vec<u8> = agreed
                .iter()
                .flat_map(|section| section.repairs.iter().copied())
                .collect();
            payload_types.sort_unstable();
            payload_types.dedup();
            read.set_repair_names(crate::read::RepairNames {
                mid: extmap_id(answer, rtc::sdp::extmap::SDES_MID_URI),
                repaired_rid: extmap_id(answer, rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI),
                payload_types,
            });
        }
    }

    /// Notes an authenticated incoming packet (tagged `tag`) for the connection's feedback: a
    /// retransmission on a repair stream fills its layer's gap; a video stream is NACKed unless
    /// that could make its sender resend under a GCM nonce it used (`nacks_need_rtx`).
    /// On a repair stream, returns the SSRC of the layer it repairs, where known.
    fn note_received(
        &mut self,
        at: Instant,
        packet: &rtc::rtp::Packet,
        tag: &StreamTag,
    ) -> Option<u32> {
        use crate::receive::Noted;
        if tag.is_repair() {
            let layer = |t: &Arc<StreamTag>| {
                !t.is_repair() && t.track_id == tag.track_id && t.rid == tag.rid
            };
            let ssrc = self
                .read
                .as_ref()
                .and_then(|r| r.layer_ssrc(layer))
                .or_else(|| {
                    self.incoming
                        .iter()
                        .find(|(_, t)| layer(t))
                        .map(|(&(ssrc, _), _)| ssrc)
                });
            if let Some(receive) = &mut self.receive {
                receive.note(at, &packet.header, Noted::Other);
                if let (Some(ssrc), Some(original)) = (ssrc, packet.payload.first_chunk::<2>()) {
                    receive.repaired(ssrc, u16::from_be_bytes(*original));
                }
            }
            return ssrc;
        }
        let receive = self.receive.as_mut()?;
        // Asked at a stream's first packet, and again once the m-lines agreed on change
        // (`repairs_negotiated` has the gaps forgotten).
        let (gated, rtx_mids) = (self.nacks_need_rtx, &self.rtx_mids);
        let nack = || !gated || tag.mid.as_ref().is_some_and(|mid| rtx_mids.contains(mid));
        receive.note_gated(at, &packet.header, tag.noted(), nack);
        None
    }

    /// The local description: while an offer is unanswered, that offer.
    pub fn local_sdp(&self) -> Result<String, Error> {
        self.rtc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(Error::NoLocalDescription)
    }

    /// Feeds one datagram received on the socket from `from`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), Error> {
        if self.open_itself(now, from, datagram) {
            return Ok(());
        }
        if self.aes_cm_only && unencrypted_aes_cm_srtcp(datagram) {
            return Err(rtc::shared::error::Error::ErrFailedToVerifyAuthTag.into());
        }
        let mut genuine = match self.take_feedback(now, from, datagram) {
            Screened::Done(taken) => return taken,
            Screened::Genuine => true,
            Screened::Unknown => false,
        };
        genuine |= match self.note_sender_reports(now, from, datagram) {
            Screened::Done(taken) => return taken,
            Screened::Genuine => true,
            Screened::Unknown => false,
        };
        if !self.admitted_to_rtc(datagram, genuine) {
            return Err(rtc::shared::error::Error::TooManySources.into());
        }
        let repeat = self
            .flights
            .as_mut()
            .is_some_and(|flights| flights.received(now, datagram));
        let local_addr = self.local_addr;
        let read = self.pc().handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        });
        if repeat {
            self.answer_repeated_flight(now, from);
        }
        read?;
        // Media or RTCP from an address the own path does not send to: the remote moved to
        // another pair without an ICE restart (a phone between networks). A report through `rtc`
        // with the next packet shows where `rtc` sends now.
        if let Some(own) = &mut self.own
            && self.selected.is_some_and(|selected| selected != from)
            && !crate::mux::is_stun(datagram)
        {
            own.report_soon();
        }
        self.note_estimate();
        Ok(())
    }

    /// The peer sent its last handshake flight again, so it lacks this side's: unless `rtc`
    /// answered, this side's last flight goes again ([`crate::handshake`]), where `rtc` sends
    /// (a repeat from any other address, which `rtc` reads all the same, gets nothing).
    fn answer_repeated_flight(&mut self, now: Instant, from: SocketAddr) {
        let mut answered = false;
        while let Some(transmit) = self.take_from_rtc() {
            answered |= crate::handshake::is_dtls(&transmit.contents);
            self.taken.push_back(transmit);
        }
        let Some(flights) = self
            .flights
            .as_mut()
            .filter(|_| !answered && self.selected == Some(from))
        else {
            return;
        };
        let flight = flights.resend(now);
        if !flight.is_empty() {
            tracing::debug!(
                datagrams = flight.len(),
                "DTLS handshake: the peer repeated its flight, ours goes again"
            );
        }
        for contents in flight {
            self.taken.push_back(Transmit {
                source: self.local_addr,
                destination: from,
                contents: contents.clone(),
            });
        }
    }

    /// Opens `datagram` on the own read path if it is RTP of a stream adopted there, from where
    /// `rtc` sends (the selected pair), and queues it as [`MediaEvent::Rtp`]. Whether it was
    /// taken care of: opened, or dropped (a packet of an adopted stream taken before or that does
    /// not open, from anywhere; or one that opened but does not parse).
    fn open_itself(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        let Some(read) = &mut self.read else {
            return false;
        };
        if self.selected != Some(from) {
            // `rtc`'s, unless it is a packet of an adopted stream that does not open here:
            // `rtc`'s context has not seen such a stream since, and could take it.
            return read.refused(datagram);
        }
        let opened = match read.open(now, datagram) {
            crate::read::Read::Opened(opened) => opened,
            crate::read::Read::Dropped => return true,
            crate::read::Read::Rtc => return false,
        };
        let packet = opened.packet;
        let mut tag = opened.tag;
        if tag.payload_type != packet.header.payload_type {
            tag = if tag.is_repair() {
                // A repair stream's tag names its layer, which `rtc` does not know. A packet on
                // it that is no retransmission (a payload type not negotiated for RTX) is
                // dropped: its start would be read as the number it repairs.
                if !self
                    .read
                    .as_ref()
                    .is_some_and(|read| read.repairs_with(packet.header.payload_type))
                {
                    return true;
                }
                crate::read::Layer::repair(&tag, packet.header.payload_type)
            } else {
                self.tag_for(
                    &tag.track_id,
                    packet.header.ssrc,
                    packet.header.payload_type,
                )
            };
            if let Some(read) = &mut self.read {
                read.retag(packet.header.ssrc, tag.clone());
            }
        }
        let repairs = self.note_received(now, &packet, &tag);
        let audio_level = self.audio_level(&tag, &packet.header);
        self.pending.push_back(MediaEvent::Rtp(IncomingRtp {
            tag,
            ssrc: packet.header.ssrc,
            audio_level,
            packet,
            opened_here: true,
            repairs,
        }));
        true
    }

    /// Whether `datagram` may go to `rtc`: anything but RTP and RTCP, and those of an SSRC it was
    /// handed before or while it has been handed fewer than [`MAX_SSRCS_TO_RTC`] others. `rtc`'s
    /// SRTP context keeps state for each SSRC it is asked to open, made before the packet is
    /// authenticated and never forgotten: datagrams from a participant's address, each with a
    /// new SSRC, grew it without bound (review helper-103). Those the SFU authenticated itself
    /// (SRTCP it opened: `authenticated`; RTP that opens with the keys the own read path found,
    /// checked once the first set is full) count in a set of their own, so spoofed datagrams
    /// filling the first keep out nothing the SFU can authenticate (review helper-106).
    fn admitted_to_rtc(&mut self, datagram: &[u8], authenticated: bool) -> bool {
        let at = if crate::mux::is_rtcp(datagram) { 4 } else { 8 };
        let ssrc = match datagram {
            [128..=191, ..] => match datagram.get(at..at + 4) {
                Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
                _ => return true,
            },
            _ => return true,
        };
        if self.ssrcs_to_rtc.iter().any(|set| set.contains(&ssrc)) {
            return true;
        }
        let [unauthenticated, genuine] = &self.ssrcs_to_rtc;
        let genuine_here = authenticated
            || (unauthenticated.len() >= MAX_SSRCS_TO_RTC
                && genuine.len() < MAX_SSRCS_TO_RTC
                && self
                    .read
                    .as_ref()
                    .is_some_and(|read| read.authenticates(datagram)));
        let ([unauthenticated, genuine], [unauthenticated_full, genuine_full]) =
            (&mut self.ssrcs_to_rtc, &mut self.ssrcs_to_rtc_full);
        let (set, full) = if genuine_here {
            (genuine, genuine_full)
        } else {
            (unauthenticated, unauthenticated_full)
        };
        if set.len() >= MAX_SSRCS_TO_RTC {
            if !*full {
                *full = true;
                if !genuine_here {
                    tracing::warn!(
                        "a connection sent RTP or RTCP of {MAX_SSRCS_TO_RTC} SSRCs not authenticated \
                         here: new ones are dropped unless they authenticate"
                    );
                } else {
                    tracing::warn!(
                        "a connection sent authenticated RTP or RTCP of {MAX_SSRCS_TO_RTC} SSRCs: \
                         new ones are dropped"
                    );
                }
            }
            return false;
        }
        set.insert(ssrc);
        true
    }

    /// Takes transport-wide feedback from the remote to the own write path's estimator, when the
    /// datagram (SRTCP from the selected pair) carries nothing else. A subscriber's browser sends
    /// about ten such reports a second; they no longer walk `rtc`'s handlers, which see only the
    /// other RTCP (receiver reports, NACKs, keyframe requests) and the consent checks, enough for
    /// its view of the connection's liveness. Anything else is `rtc`'s to handle, known genuine
    /// if it authenticated here. A replay, or SRTCP sent unencrypted (which `rtc`'s AES-CM
    /// cipher would take without checking its tag), is dropped with an error.
    fn take_feedback(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Screened {
        let Some(own) = self.own.as_mut() else {
            return Screened::Unknown;
        };
        if !crate::mux::is_rtcp(datagram) {
            return Screened::Unknown;
        }
        // Opened from any address, so that what `rtc` would refuse to parse at a cost (feedback
        // counting too many packets) or take again (a replay) is dropped whichever way it came.
        let packets = match own.open_rtcp(datagram) {
            crate::send::OpenedRtcp::Opened(packets) => packets,
            crate::send::OpenedRtcp::Refused(error) => return Screened::Done(Err(error.into())),
            crate::send::OpenedRtcp::Unencrypted => {
                return Screened::Done(Err(
                    rtc::shared::error::Error::ErrFailedToVerifyAuthTag.into()
                ));
            }
            crate::send::OpenedRtcp::Not => return Screened::Unknown,
        };
        if self.selected != Some(from)
            || packets.is_empty()
            || !packets.iter().all(|p| p.as_any().is::<TransportLayerCc>())
        {
            return Screened::Genuine;
        }
        let mut estimate = None;
        for feedback in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
        {
            estimate = own.feedback(now, feedback).or(estimate);
        }
        if let (Some(bps), Some(shared)) = (estimate, &self.estimate) {
            shared.store(bps, std::sync::atomic::Ordering::Relaxed);
            self.note_estimate();
        }
        self.feedback_opened_here += 1;
        if self.rtcp_to_application {
            self.pending
                .push_back(MediaEvent::Rtcp { mid: None, packets });
        }
        Screened::Done(Ok(()))
    }

    /// How many datagrams of transport-wide feedback were opened here since the last call.
    pub fn take_feedback_opened_here(&mut self) -> u64 {
        std::mem::take(&mut self.feedback_opened_here)
    }

    /// The NACK packets written to the remote since the last call, and the packets they asked
    /// for (a packet asked for three times counts three).
    pub fn take_nacks_sent(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.nacks_sent)
    }

    /// Takes the sender reports the receiver reports refer to out of SRTCP from the remote, where
    /// the own read path has the keys to open it (`rtc` then handles the datagram as ever, known
    /// genuine). Dropped instead, opened from any address: a replay, or feedback counting too
    /// many packets (`send::RemoteRtcp::open`).
    fn note_sender_reports(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Screened {
        let (Some(read), Some(receive)) = (&mut self.read, &mut self.receive) else {
            return Screened::Unknown;
        };
        let reports = match read.sender_reports(datagram) {
            crate::read::Reports::Opened(reports) => reports,
            crate::read::Reports::Refused => {
                return Screened::Done(Err(rtc::shared::error::Error::InvalidHeader.into()));
            }
            crate::read::Reports::Unknown => return Screened::Unknown,
        };
        if self.selected == Some(from) {
            for (ssrc, ntp_time) in reports {
                receive.sender_report(ssrc, ntp_time, now);
            }
        }
        Screened::Genuine
    }

    /// The RFC 6464 level of an audio packet that carries one.
    fn audio_level(&self, tag: &StreamTag, header: &rtc::rtp::Header) -> Option<u8> {
        if tag.kind == Some(MediaKind::Video) {
            return None;
        }
        self.audio_level_id
            .and_then(|id| header.get_extension(id))
            .and_then(|value| value.first().map(|b| b & 0x7f))
    }

    /// Queues [`MediaEvent::TargetBitrate`] when the estimate changed.
    fn note_estimate(&mut self) {
        if let Some(estimate) = &self.estimate {
            let bps = estimate.load(std::sync::atomic::Ordering::Relaxed);
            if bps != self.last_estimate {
                self.last_estimate = bps;
                self.pending.push_back(MediaEvent::TargetBitrate(bps));
            }
        }
    }

    /// Lets timers fire (ICE checks, DTLS retransmits, RTCP reports...). Call at or after
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        // Every timer is served, whatever fails: one left in the past would be polled again
        // at once, for ever. `rtc` only when its own timer is due (or unknown, while it is
        // polled): most wake-ups are the own paths' (feedback every 100 ms), and handing `rtc`
        // a timeout walks its handlers and interceptors and has it polled again twice.
        let rtc_due = !self.polled.quiet() || self.polled.deadline.is_some_and(|at| at <= now);
        let rtc = if rtc_due {
            self.pc().handle_timeout(now)
        } else {
            Ok(())
        };
        // `rtc-dtls` sent its flight for the last time and gave up (its handshake state
        // "errored"), or the peer sent nothing new for `HANDSHAKE_STALL` since its last message
        // or ICE last came up; `rtc` would leave the connection "connecting" for good.
        if std::mem::take(&mut self.ice_came_up)
            && let Some(flights) = &mut self.flights
        {
            flights.ice_connected(now);
        }
        let gave_up = matches!(rtc, Err(rtc::shared::error::Error::ErrInvalidFsmTransition));
        let stalled = self
            .flights
            .as_ref()
            .and_then(crate::handshake::Flights::deadline)
            .is_some_and(|at| at <= now);
        if (gave_up || stalled) && !self.connected && self.flights.take().is_some() {
            tracing::debug!(gave_up, stalled, "DTLS handshake failed");
            self.pending
                .push_back(MediaEvent::StateChanged(PeerState::Failed));
        }
        if let Some(own) = &mut self.own {
            own.handle_timeout(now);
        }
        let reports = self.write_reports(now, false);
        let feedback = self.write_feedback(now);
        rtc?;
        reports?;
        feedback
    }

    /// Writes the transport-wide feedback and NACKs due through `rtc`, on any receiver: RTCP
    /// goes to the connection.
    fn write_feedback(&mut self, now: Instant) -> Result<(), Error> {
        let Some(receive) = &mut self.receive else {
            return Ok(());
        };
        if receive.poll_timeout().is_none_or(|at| at > now) {
            return Ok(());
        }
        // Round trips measured on a path the connection no longer takes pace nothing.
        receive.keep_round_trips_of(self.selected.map(|to| to.ip().to_canonical()));
        let packets = receive.due(now);
        if packets.is_empty() {
            return Ok(());
        }
        // A receiver whose transceiver still runs (a removed track's is stopped).
        let receivers: Vec<RTCRtpReceiverId> =
            self.remote_tracks.values().map(|t| t.receiver).collect();
        let Some(id) = receivers
            .into_iter()
            .find(|id| self.pc().rtp_receiver(*id).is_some())
        else {
            return Ok(());
        };
        // One datagram each: `rtc` makes one compound packet of what one call writes.
        for packet in packets {
            let asked = crate::receive::nack_asks(packet.as_ref());
            if let Some(mut receiver) = self.pc().rtp_receiver(id) {
                receiver.write_rtcp(now, vec![packet])?;
                if let Some(asked) = asked {
                    self.nacks_sent.0 += 1;
                    self.nacks_sent.1 += asked;
                }
            }
        }
        Ok(())
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(transmit) = self.taken.pop_front() {
            return Some(transmit);
        }
        if !self.polled.quiet() {
            if let Some(transmit) = self.take_from_rtc() {
                self.polled.found();
                return Some(transmit);
            }
            self.polled.written();
        } else {
            // Debug builds (every test) check that `rtc` really has nothing (see `Polled`).
            debug_assert!(
                self.rtc.poll_write().is_none(),
                "rtc had a datagram while left unpolled"
            );
        }
        let own = self.own.as_mut()?;
        let destination = self.selected?;
        own.poll_datagram().map(|contents| Transmit {
            source: self.local_addr,
            destination,
            contents,
        })
    }

    /// The next datagram `rtc` sends, shown to the own write path's key check.
    fn take_from_rtc(&mut self) -> Option<Transmit> {
        let out = self.rtc.poll_write()?;
        if !crate::mux::is_stun(&out.message) {
            self.selected = Some(out.transport.peer_addr);
        }
        if let Some(own) = &mut self.own {
            own.check(&out.message);
        }
        let contents = out.message.freeze();
        if let Some(flights) = &mut self.flights {
            flights.sent(&contents);
        }
        Some(Transmit {
            source: out.transport.local_addr,
            destination: out.transport.peer_addr,
            contents,
        })
    }

    /// Writes the own write path's sender reports through `rtc` (which seals SRTCP), when due or
    /// when `force`d.
    fn write_reports(&mut self, now: Instant, force: bool) -> Result<(), Error> {
        let Some(own) = &mut self.own else {
            return Ok(());
        };
        let reports = own.reports(now, force);
        if reports.is_empty() {
            return Ok(());
        }
        let packets = reports
            .into_iter()
            .map(|r| Box::new(r) as Box<dyn rtc::rtcp::Packet>)
            .collect();
        self.write_rtcp(now, packets)
    }

    /// Writes RTCP through `rtc` (which seals SRTCP) on any of the connection's senders: RTCP goes
    /// to the connection.
    fn write_rtcp(
        &mut self,
        now: Instant,
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    ) -> Result<(), Error> {
        let senders: Vec<RTCRtpSenderId> = self.pc().get_senders().collect();
        let Some(id) = senders
            .into_iter()
            .find(|id| self.pc().rtp_sender(*id).is_some())
        else {
            return Ok(());
        };
        let Some(mut sender) = self.pc().rtp_sender(id) else {
            return Ok(());
        };
        sender.write_rtcp(now, packets)?;
        Ok(())
    }

    /// Whether the connection seals what it sends itself ([`MediaConfig::own_write_path`], its
    /// keys checked), not through `rtc`'s write path.
    pub fn seals_itself(&self) -> bool {
        self.own
            .as_ref()
            .is_some_and(crate::send::OwnWrite::sealing)
    }

    /// Forgets what was kept of stream `ssrc` for NACKs: it is paused (`send::OwnWrite::forget_sent`).
    pub fn forget_sent(&mut self, ssrc: u32) {
        if let Some(own) = &mut self.own {
            own.forget_sent(ssrc);
        }
    }

    /// The packets the own write path resent for NACKs since the last call.
    pub fn take_resent(&mut self) -> u64 {
        std::mem::take(&mut self.resent)
    }

    /// Of those, the ones sealed again from the parts the history kept ([`Keep::Parts`]),
    /// since the last call.
    pub fn take_resealed(&mut self) -> u64 {
        std::mem::take(&mut self.resealed)
    }

    /// The round trip a receiver report block arriving at `now` gives, from the sender report it
    /// names (`last_sender_report`) and the delay since (`delay`, in 1/65536 s): only where the
    /// connection seals what it sends itself, whose own reports' clock is known here.
    pub fn round_trip(
        &self,
        now: Instant,
        last_sender_report: u32,
        delay: u32,
    ) -> Option<Duration> {
        self.own
            .as_ref()
            .filter(|own| own.sealing())?
            .round_trip(now, last_sender_report, delay)
    }

    /// A round trip measured at `now` by another connection, one that sends to `measured_to` (a
    /// participant's publisher connection takes its subscriber connection's): kept where this
    /// connection sends to the same IP (the same path), and the NACKs it sends are paced by the
    /// longest of the last few seconds (`receive::NackPacing`).
    pub fn add_round_trip(&mut self, now: Instant, round_trip: Duration, measured_to: SocketAddr) {
        let path = measured_to.ip().to_canonical();
        if let (Some(receive), Some(to)) = (&mut self.receive, self.selected)
            && to.ip().to_canonical() == path
        {
            receive.add_round_trip(now, round_trip, path);
        }
    }

    /// The remote address the connection sends to (its selected pair's), once it has one.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether ICE has a working candidate pair, as the events polled so far said: a connection
    /// still [`PeerState::Connecting`] with one is in its DTLS handshake.
    pub fn ice_connected(&self) -> bool {
        self.ice_connected
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let own = [
            self.own
                .as_ref()
                .and_then(crate::send::OwnWrite::poll_timeout),
            self.receive
                .as_ref()
                .and_then(crate::receive::ReceiveFeedback::poll_timeout),
            self.flights
                .as_ref()
                .and_then(crate::handshake::Flights::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let rtc = if self.polled.quiet() {
            debug_assert_eq!(
                self.rtc.poll_timeout(),
                self.polled.deadline,
                "rtc's timer moved while it was left unpolled"
            );
            self.polled.deadline
        } else {
            let deadline = self.rtc.poll_timeout();
            self.polled.timed(deadline);
            deadline
        };
        match (rtc, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event: state changes and track openings first, then media in arrival order.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        if self.polled.quiet() {
            debug_assert!(
                self.rtc.poll_event().is_none() && self.rtc.poll_read().is_none(),
                "rtc had an event or a read while left unpolled"
            );
            return None;
        }
        let event = self.poll_rtc_event();
        match event {
            Some(_) => self.polled.found(),
            None => self.polled.read(),
        }
        event
    }

    /// The next event out of `rtc` (see [`poll_event`](Self::poll_event)).
    fn poll_rtc_event(&mut self) -> Option<MediaEvent> {
        while let Some(event) = self.rtc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    let state = PeerState::from_rtc(state);
                    self.connected |= state == PeerState::Connected;
                    if self.connected {
                        self.flights = None;
                    }
                    if state == PeerState::Connected
                        && let Some(own) = &mut self.own
                    {
                        // Connected again (an ICE restart): the selected pair may have changed,
                        // and only what `rtc` sends tells where it goes now.
                        own.report_soon();
                    }
                    return Some(MediaEvent::StateChanged(state));
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let mid = self.mid_of(init.receiver_id);
                    self.remote_tracks.insert(
                        init.track_id.clone(),
                        RemoteTrack {
                            receiver: init.receiver_id,
                            mid: mid.clone(),
                        },
                    );
                    if init.ssrc != 0 {
                        self.ssrc_receivers.insert(init.ssrc, init.receiver_id);
                    }
                    let kind = self
                        .pc()
                        .rtp_receiver(init.receiver_id)
                        .and_then(|r| MediaKind::from_rtc(r.track().kind()));
                    return Some(MediaEvent::TrackOpened(IncomingTrack {
                        track_id: init.track_id,
                        mid,
                        rid: init.rid.map(Rid),
                        ssrc: init.ssrc,
                        kind,
                    }));
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                    let was = self.ice_connected;
                    self.ice_connected = matches!(
                        state,
                        RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                    );
                    self.ice_came_up |= self.ice_connected && !was;
                }
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                    let label = self
                        .pc()
                        .data_channel(id)
                        .map(|c| c.label().to_owned())
                        .unwrap_or_default();
                    return Some(MediaEvent::DataChannelOpen {
                        channel: DataChannel(id),
                        label,
                    });
                }
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id)) => {
                    return Some(MediaEvent::DataChannelClosed {
                        channel: DataChannel(id),
                    });
                }
                _ => {}
            }
        }
        while let Some(read) = self.rtc.poll_read() {
            match read.message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    return Some(self.tag_rtp(read.now, &track_id, packet));
                }
                RTCMessage::RtcpPacket(track_id, packets) => {
                    if let Some(own) = &mut self.own {
                        let mut estimate = None;
                        for packet in &packets {
                            let any = packet.as_any();
                            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                let resent = own.resend(read.now, nack) as u64;
                                self.resent = self.resent.saturating_add(resent);
                                self.resealed = self.resealed.saturating_add(own.take_resealed());
                            } else if let Some(feedback) = any.downcast_ref::<TransportLayerCc>() {
                                estimate = own.feedback(read.now, feedback).or(estimate);
                            }
                        }
                        if let (Some(bps), Some(shared)) = (estimate, &self.estimate) {
                            // Where the feedback interceptor leaves `rtc`'s estimate: reported
                            // as it would be.
                            shared.store(bps, std::sync::atomic::Ordering::Relaxed);
                            self.note_estimate();
                        }
                    }
                    let mid = self
                        .remote_tracks
                        .get(&track_id)
                        .and_then(|t| t.mid.clone());
                    return Some(MediaEvent::Rtcp { mid, packets });
                }
                RTCMessage::DataChannelMessage(id, message) => {
                    return Some(MediaEvent::Data {
                        channel: DataChannel(id),
                        data: message.data,
                    });
                }
                _ => {}
            }
        }
        None
    }

    fn mid_of(&mut self, receiver: RTCRtpReceiverId) -> Option<Mid> {
        let ids: Vec<_> = self.pc().get_transceivers().collect();
        ids.into_iter().find_map(|id| {
            let transceiver = self.pc().rtp_transceiver(id)?;
            if transceiver.receiver() == Some(receiver) {
                transceiver.mid().clone().map(Mid)
            } else {
                None
            }
        })
    }

    fn tag_rtp(&mut self, at: Instant, track_id: &str, packet: rtc::rtp::Packet) -> MediaEvent {
        let ssrc = packet.header.ssrc;
        let pt = packet.header.payload_type;
        let audio_level = self
            .audio_level_id
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|value| value.first().map(|b| b & 0x7f));
        let tag = self.tag_for(track_id, ssrc, pt);
        let noted = tag.noted();
        let repairs = self.note_received(at, &packet, &tag);
        // The stream's next packets may be opened on the own read path, once `rtc` has bound it
        // to its track (it tagged it with one).
        if noted != crate::receive::Noted::Other
            && self.remote_tracks.contains_key(&tag.track_id)
            && let Some(read) = &mut self.read
        {
            read.offer(at, ssrc, packet.header.sequence_number, tag.clone());
        }
        MediaEvent::Rtp(IncomingRtp {
            tag,
            ssrc,
            audio_level,
            packet,
            opened_here: false,
            repairs,
        })
    }

    /// How packets of `ssrc` with payload type `pt`, which `rtc` bound to `track_id`, are tagged.
    fn tag_for(&mut self, track_id: &str, ssrc: u32, pt: u8) -> Arc<StreamTag> {
        if let Some(tag) = self.incoming.get(&(ssrc, pt))
            && tag.track_id == track_id
        {
            return tag.clone();
        }
        if self.incoming.len() >= MAX_INCOMING_TAGS {
            self.incoming.clear();
        }
        if self.ssrc_receivers.len() >= MAX_INCOMING_TAGS {
            // Kept in step with the tags: an SSRC still sending is looked up again, and its
            // receiver found anew.
            self.ssrc_receivers.clear();
            self.incoming.clear();
        }
        let tag = self.look_up_tag(track_id, ssrc, pt);
        self.incoming.insert((ssrc, pt), tag.clone());
        tag
    }

    fn look_up_tag(&mut self, track_id: &str, ssrc: u32, pt: u8) -> Arc<StreamTag> {
        let mut tag = StreamTag {
            track_id: track_id.to_owned(),
            payload_type: pt,
            mid: None,
            rid: None,
            kind: None,
            mime_type: None,
            repair: false,
        };
        let Some(remote) = self.remote_tracks.get(track_id).cloned() else {
            return Arc::new(tag);
        };
        self.ssrc_receivers.entry(ssrc).or_insert(remote.receiver);
        tag.mid = remote.mid;
        if let Some(mut receiver) = self.pc().rtp_receiver(remote.receiver) {
            tag.rid = receiver.track().rid(ssrc).cloned().map(Rid);
            tag.kind = MediaKind::from_rtc(receiver.track().kind());
            tag.mime_type = receiver
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.payload_type == pt)
                .map(|c| c.rtp_codec.mime_type.clone());
            tag.repair = tag.mime_type.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case(
                    rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX,
                )
            });
        }
        Arc::new(tag)
    }

    /// The payload type `track` sends `mime_type` with, and its transport-wide sequence number's
    /// extension id.
    fn payload_type_of(
        &mut self,
        track: LocalTrack,
        mime_type: &str,
    ) -> Result<(u8, Option<u8>), Error> {
        // Kept only for live senders (a removed track's entry goes with it): a hit needs no
        // lookup in `rtc`, which would count as handing it something (see `Polled`).
        let kept = self
            .payload_types
            .get_mut(&track.sender)
            .and_then(|codecs| codecs.find(mime_type))
            .map(|codec| (codec.payload_type, codec.twcc_id));
        let (payload_type, twcc_id) = match kept {
            Some(kept) => kept,
            None => {
                let mut sender = self
                    .pc()
                    .rtp_sender(track.sender)
                    .ok_or(Error::UnknownTrack)?;
                let parameters = &sender.get_parameters().rtp_parameters;
                let payload_type = parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime_type))
                    .map(|c| c.payload_type);
                // The transport-wide sequence number's extension, as negotiated on this leg.
                let twcc_id = parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
                    .and_then(|e| u8::try_from(e.id).ok());
                let codec = SentCodec {
                    mime_type: mime_type.to_owned(),
                    payload_type,
                    twcc_id,
                };
                match self.payload_types.get_mut(&track.sender) {
                    Some(codecs) => codecs.add(codec),
                    None => {
                        self.payload_types.insert(
                            track.sender,
                            SentCodecs {
                                last: codec,
                                others: Vec::new(),
                            },
                        );
                    }
                }
                (payload_type, twcc_id)
            }
        };
        let payload_type =
            payload_type.ok_or_else(|| Error::CodecNotNegotiated(mime_type.to_owned()))?;
        Ok((payload_type, twcc_id))
    }

    /// Sends `packet` on a local track: sets the track's SSRC and the payload type the remote peer
    /// negotiated for `mime_type` on that m-line, and drops header extensions (their ids and values
    /// belonged to the leg the packet came in on).
    ///
    /// `keep` says how the NACK history keeps the datagram, where this connection seals its own
    /// ([`Keep`]).
    pub fn write_rtp(
        &mut self,
        track: LocalTrack,
        mut packet: rtc::rtp::Packet,
        mime_type: &str,
        keep: Keep,
        now: Instant,
    ) -> Result<(), Error> {
        let (payload_type, twcc_id) = self.payload_type_of(track, mime_type)?;
        packet.header.ssrc = track.ssrc;
        packet.header.payload_type = payload_type;
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        // The padding the publisher's extensions needed: `rtc` adds ours (transport-wide sequence
        // numbers) relative to it, and a stale value makes the extension block's length wrong, so
        // every receiver drops the packet.
        packet.header.extensions_padding = 0;
        if let Some(own) = &mut self.own {
            own.check_seal(&packet)?;
            own.count(now, &packet);
            if own.take_report_soon() {
                // Through `rtc`, to the selected pair: `selected` follows it before the packet
                // below is handed out.
                self.write_reports(now, true)?;
            }
            if let Some(own) = &mut self.own
                && own.wants_check(self.connected)
            {
                // A sender report on this packet's stream through `rtc`, whose SRTCP tells which
                // keys are ours.
                let report = own.check_report(now, &packet);
                let written = self.write_rtcp(now, vec![Box::new(report)]);
                while let Some(transmit) = self.take_from_rtc() {
                    self.taken.push_back(transmit);
                }
                if let Err(error) = written {
                    tracing::debug!(%error, "the key check's report was not written");
                }
                if let Some(own) = &mut self.own {
                    // Not settled (nothing `rtc` sent opened or failed): the next packet tries
                    // again.
                    own.check_again();
                }
            }
            if let Some(own) = &mut self.own
                && !own.refused()
            {
                // Sealed here, or dropped until the keys are checked: `rtc` never seals RTP on a
                // connection the own path may seal on, so one context numbers each stream.
                return if own.seal(now, &mut packet, twcc_id, keep)? {
                    Ok(())
                } else {
                    Err(Error::KeysUnchecked)
                };
            }
        }
        let mut sender = self
            .pc()
            .rtp_sender(track.sender)
            .ok_or(Error::UnknownTrack)?;
        sender.write_rtp(now, packet)?;
        Ok(())
    }

    /// Asks the sender of the incoming stream `ssrc` for a keyframe (RTCP PLI).
    pub fn request_keyframe(&mut self, ssrc: u32, now: Instant) -> Result<(), Error> {
        let receiver = *self
            .ssrc_receivers
            .get(&ssrc)
            .ok_or(Error::UnknownSsrc(ssrc))?;
        let mut receiver = self
            .pc()
            .rtp_receiver(receiver)
            .ok_or(Error::UnknownSsrc(ssrc))?;
        receiver.write_rtcp(
            now,
            vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })],
        )?;
        Ok(())
    }

    /// Closes the connection (sends DTLS close_notify where it can).
    pub fn close(&mut self) -> Result<(), Error> {
        self.pc().close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remotes_half_of_the_keys_is_read_from_its_setup_attribute() {
        let now = Instant::now();
        let mut offering = MediaPeer::new("127.0.0.1:5000".parse().unwrap(), now).unwrap();
        let mut answering = MediaPeer::new("127.0.0.1:5001".parse().unwrap(), now).unwrap();
        let _ = offering.add_local_track(MediaKind::Audio, "audio/opus", "s", "t", 1);
        let offer = offering.create_offer(now).unwrap();
        let answer = answering.accept_offer(offer.clone(), now).unwrap();
        // The offer leaves the role to the answer, which takes the DTLS server's: the offering
        // side is the client (half 0), the answering one the server (half 1).
        assert!(offer.contains("a=setup:actpass"), "{offer}");
        assert!(answer.contains("a=setup:passive"), "{answer}");
        assert_eq!(remote_key_half(&offer), 0);
        assert_eq!(remote_key_half(&answer), 1);
        offering.accept_answer(answer, now).unwrap();
        let half = |peer: &MediaPeer| {
            peer.read
                .as_ref()
                .and_then(crate::read::OwnRead::remote_half)
        };
        assert_eq!((half(&offering), half(&answering)), (Some(1), Some(0)));
        // The answering side offers next, `actpass` as ever: its role stays the server's, and
        // neither side hears the half again (`rtc` keeps the role the first description gave).
        let again = answering.create_offer(now).unwrap();
        assert!(again.contains("a=setup:actpass"), "{again}");
        let _ = offering.accept_offer(again, now).unwrap();
        assert_eq!((half(&offering), half(&answering)), (Some(1), Some(0)));
        // As `rtc` reads it: the first media section's, never the session's.
        let described = |session: &str, media: &[&str]| {
            let sections: String = media
                .iter()
                .map(|setup| format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{setup}"))
                .collect();
            format!("v=0\r\n{session}{sections}")
        };
        for (sdp, half) in [
            (
                described("a=setup:passive\r\n", &["a=setup:actpass\r\n"]),
                0,
            ),
            (
                described("", &["a=setup:active\r\n", "a=setup:passive\r\n"]),
                0,
            ),
            (described("", &["", "a=setup:passive\r\n"]), 1),
            (described("", &["a=setup\r\n", "a=setup:passive\r\n"]), 0),
            (described("", &["a=setup:holdconn\r\n"]), 0),
            (described("", &[]), 0),
        ] {
            assert_eq!(remote_key_half(&sdp), half, "{sdp}");
        }
    }

    #[test]
    fn rtc_is_handed_datagrams_of_a_bounded_number_of_ssrcs() {
        let now = Instant::now();
        let mut peer = MediaPeer::new("127.0.0.1:5000".parse().unwrap(), now).unwrap();
        let from: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let packet = |second: u8, at: usize, ssrc: u32| {
            let mut datagram = vec![0x80, second, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
            datagram.resize(40, 0);
            datagram[at..at + 4].copy_from_slice(&ssrc.to_be_bytes());
            datagram
        };
        let (rtp, rtcp) = (|ssrc| packet(96, 8, ssrc), |ssrc| packet(200, 4, ssrc));
        let refused = |peer: &mut MediaPeer, datagram: Vec<u8>| {
            matches!(
                peer.handle_receive(now, from, &datagram),
                Err(Error::Rtc(rtc::shared::error::Error::TooManySources))
            )
        };
        for ssrc in 0..MAX_SSRCS_TO_RTC as u32 - 1 {
            assert!(!refused(&mut peer, rtp(ssrc)), "{ssrc}");
        }
        assert!(
            !refused(&mut peer, rtcp(1_000_000)),
            "RTCP's sender counts too"
        );
        assert!(refused(&mut peer, rtp(1_000_001)));
        assert!(refused(&mut peer, rtcp(1_000_002)));
        assert!(refused(&mut peer, rtp(1_000_001)), "nor later");
        // Streams it was handed before still go.
        assert!(!refused(&mut peer, rtp(7)));
        assert!(!refused(&mut peer, rtcp(1_000_000)));
        // Once the own read path has found the remote's keys, RTP of a new SSRC that
        // authenticates with them goes (spoofed datagrams filled the bound); what does not, not.
        peer.read = Some(crate::read::OwnRead::with_keys(&crate::read::tests::keys()));
        let mut sender = crate::read::tests::Sender::new();
        assert!(!refused(&mut peer, sender.seal(2_000_000, 1)));
        let mut forged = sender.seal(2_000_001, 1);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(refused(&mut peer, forged));
        // SRTCP the SFU opened itself (a sender report) counts with the authenticated SSRCs.
        let mut remote = crate::read::tests::keys().context().unwrap();
        let mut report = |ssrc| {
            use rtc::shared::marshal::Marshal;
            let plain = rtc::rtcp::sender_report::SenderReport {
                ssrc,
                ..Default::default()
            }
            .marshal()
            .unwrap();
            remote.encrypt_rtcp(&plain).unwrap().to_vec()
        };
        assert!(peer.receive.is_some(), "sender reports are read");
        assert!(!refused(&mut peer, report(3_000_000)));
        assert_eq!(peer.ssrcs_to_rtc[1].len(), 2);
        // The authenticated are bounded too: a client holding the keys cannot grow `rtc`'s
        // state either.
        for ssrc in 3..=MAX_SSRCS_TO_RTC as u32 {
            assert!(peer.admitted_to_rtc(&rtcp(4_000_000 + ssrc), true));
        }
        assert!(!peer.admitted_to_rtc(&rtcp(5_000_000), true));
        assert!(refused(&mut peer, report(3_000_001)));
        assert!(refused(&mut peer, sender.seal(2_000_002, 1)));
        assert!(!refused(&mut peer, report(3_000_000)), "known before");
    }

    /// A publisher alternating codecs on one track has every copy sent in the codec it came in:
    /// each codec's payload type is looked up in `rtc` once, not at each change (a lookup
    /// clones the sender's whole parameter set, and counts as handing `rtc` something).
    #[test]
    fn a_track_sending_codecs_in_turn_looks_each_up_once() {
        let now = Instant::now();
        let mut peer = MediaPeer::new("127.0.0.1:5000".parse().unwrap(), now).unwrap();
        let track = peer
            .add_local_track(MediaKind::Video, "video/VP8", "s", "t", 1234)
            .unwrap();
        let offer = peer.create_offer(now).unwrap();
        let mut remote = MediaPeer::new("127.0.0.1:6000".parse().unwrap(), now).unwrap();
        let answer = remote.accept_offer(offer, now).unwrap();
        peer.accept_answer(answer, now).unwrap();
        let vp8 = peer.payload_type_of(track, "video/VP8").unwrap();
        let h264 = peer.payload_type_of(track, "video/H264").unwrap();
        assert_ne!(vp8.0, h264.0);
        assert!(peer.payload_type_of(track, "video/none").is_err());
        let quiet = Polled {
            empty_sweeps: EMPTY_SWEEPS,
            stage: Stage::Start,
            deadline: None,
        };
        peer.polled = quiet;
        for _ in 0..100 {
            assert_eq!(peer.payload_type_of(track, "video/VP8").unwrap(), vp8);
            assert_eq!(peer.payload_type_of(track, "video/h264").unwrap(), h264);
            assert!(peer.payload_type_of(track, "video/none").is_err());
        }
        assert_eq!(peer.polled, quiet, "rtc was not asked again");
        // As many codecs as a track keeps, each looked up once more.
        for n in 0..2 * MAX_SENT_CODECS {
            let _ = peer.payload_type_of(track, &format!("video/x{n}"));
        }
        assert_eq!(peer.payload_types[&track.sender].len(), MAX_SENT_CODECS);
    }

    #[test]
    fn an_offer_resends_on_rtx_when_every_video_section_offers_it() {
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";
        let video = |mid: &str, port: u16, rtx: bool| {
            let mut section = format!(
                "m=video {port} UDP/TLS/RTP/SAVPF 96 97\r\na=mid:{mid}\r\na=rtpmap:96 VP8/90000\r\n"
            );
            if rtx {
                section += "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
            }
            section
        };
        let session = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let sdp = format!(
            "{session}{audio}{}{}",
            video("1", 9, true),
            video("2", 9, true)
        );
        assert!(video_resends_on_rtx(&sdp));
        let section = |mid: &str| VideoSection {
            mid: Some(mid.to_owned()),
            media: vec![96],
            repairs: vec![97],
            apts: vec![(97, 96)],
        };
        assert_eq!(video_sections(&sdp), vec![section("1"), section("2")]);
        // RTX for one codec but not another the SFU forwards: a stream of the second would be
        // resent on its own SSRC. (Formats the SFU does not forward, FEC here, do not count.)
        let h264 = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 118\r\na=mid:3\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=rtpmap:102 H264/90000\r\na=rtpmap:118 ulpfec/90000\r\n";
        assert!(!video_resends_on_rtx(&format!("{session}{h264}")));
        let paired =
            h264.to_owned() + "a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102;rtx-time=3000\r\n";
        assert!(video_resends_on_rtx(&format!("{session}{paired}")));
        // One video section without RTX: its resends would reuse SRTP indexes.
        let sdp = format!(
            "{session}{audio}{}{}",
            video("1", 9, true),
            video("2", 9, false)
        );
        assert!(!video_resends_on_rtx(&sdp));
        // A rejected one does not count; a bundled one (port 0 too) does; audio alone never
        // resends.
        let sdp = format!(
            "{session}{audio}{}{}",
            video("1", 9, true),
            video("2", 0, false)
        );
        assert!(video_resends_on_rtx(&sdp));
        let bundled = video("2", 0, false) + "a=bundle-only\r\n";
        let sdp = format!("{session}{audio}{}{bundled}", video("1", 9, true));
        assert!(!video_resends_on_rtx(&sdp));
        assert!(video_resends_on_rtx(&format!("{session}{audio}")));
        // The RTX formats registered for the answer: one per video codec, after it.
        let repairs: Vec<(u8, String)> = rtx_codecs(&sfu_codecs())
            .into_iter()
            .map(|(c, _)| (c.payload_type, c.rtp_codec.sdp_fmtp_line))
            .collect();
        assert_eq!(
            repairs,
            [
                (97, "apt=96"),
                (99, "apt=98"),
                (126, "apt=125"),
                (42, "apt=41")
            ]
            .map(|(pt, apt)| (pt, apt.to_owned()))
        );
    }

    #[test]
    fn ice_credentials_are_read_where_rtc_reads_them() {
        let some = |s: &str| Some(s.to_owned());
        let session = "v=0\r\na=ice-ufrag:S\r\na=ice-pwd:s\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:A\r\na=ice-pwd:a\r\n";
        assert_eq!(ice_credentials(session), (some("S"), some("s")));
        // Without the session's: the first section not inactive, else the first inactive one.
        let sections = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\n\
            a=ice-ufrag:I\r\na=ice-pwd:i\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
            a=ice-ufrag:V\r\na=ice-pwd:v\r\n";
        assert_eq!(ice_credentials(sections), (some("V"), some("v")));
        let inactive = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\n\
            a=ice-ufrag:I\r\na=ice-pwd:i\r\n";
        assert_eq!(ice_credentials(inactive), (some("I"), some("i")));
        assert_eq!(ice_credentials("v=0\r\n"), (None, None));
    }

    /// libwebrtc trickles a candidate with ` ufrag …` after it and copies it into its later
    /// descriptions without: one candidate, counted once. Another port, type or related address
    /// is another; text of another shape is its own.
    #[test]
    fn a_candidate_is_known_by_its_path_not_its_text() {
        let trickled = "candidate:842163049 1 udp 1677729535 203.0.113.7 50012 typ srflx \
            raddr 192.168.1.20 rport 50012 generation 0 ufrag Wq3L network-cost 10";
        let written = "candidate:842163049 1 udp 1677729535 203.0.113.7 50012 typ srflx \
            raddr 192.168.1.20 rport 50012 generation 0 network-cost 10";
        assert_eq!(candidate_key(trickled), candidate_key(written));
        assert_eq!(
            candidate_key("candidate:1 1 UDP 9 10.0.0.1 9 typ host"),
            candidate_key("candidate:2 1 udp 7 10.0.0.1 9 typ host"),
            "foundation, priority and the transport's case name no path"
        );
        // Whatever `rtc` keeps apart is kept apart, written oddly or not (review helper-69: a
        // key coarser than `rtc`'s comparison let such variants past the bound as one).
        let tcp = "candidate:1 1 tcp 1 2001:db8::a 9 typ host tcptype passive";
        for (one, other) in [
            (written, written.replace("50012 typ", "50013 typ")),
            (written, written.replace("typ srflx", "typ relay")),
            (
                written,
                written.replace("raddr 192.168.1.20", "raddr 192.168.1.21"),
            ),
            (written, written.replace("rport 50012", "rport 50013")),
            (written, written.replace("rport 50012", "x 50013")),
            (tcp, tcp.replace("2001:db8::a", "2001:DB8::A")),
            (tcp, tcp.replace("passive", "so")),
            (tcp, tcp.replace("tcp 1", "udp 1")),
        ] {
            let rtc_apart = |a: &str, b: &str| {
                let parse = |text: &str| {
                    rtc::ice::candidate::unmarshal_candidate(&text["candidate:".len()..])
                };
                match (parse(a), parse(b)) {
                    (Ok(a), Ok(b)) => !a.equal(&b),
                    _ => true,
                }
            };
            assert!(rtc_apart(one, &other), "{other}");
            assert_ne!(candidate_key(one), candidate_key(&other), "{other}");
        }
        assert_eq!(candidate_key("candidate:junk"), "candidate:junk");
    }

    /// A description's candidates past the bound are left out, its other lines kept; those
    /// already taken, or written twice, count once; an ICE restart counts from none.
    #[test]
    fn a_description_naming_too_many_candidates_has_those_past_the_bound_left_out() {
        let line = |n: usize| {
            format!(
                "a=candidate:{n} 1 udp 2122260223 10.8.{}.{} 4000 typ host\r\n",
                n / 200,
                n % 200 + 1
            )
        };
        let sdp = |range: std::ops::Range<usize>| {
            let mut sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n".to_owned();
            for n in range {
                sdp += &line(n);
            }
            sdp + "a=end-of-candidates\r\n"
        };
        let mut taken = RemoteCandidates::default();
        let (new, kept) = taken.in_sdp(&sdp(0..10), false);
        assert_eq!((new.len(), kept), (10, None), "within the bound: as it was");
        taken.taken.extend(new);
        // The ten again, written twice over, with 60 more: 54 fit.
        let twice = sdp(0..70) + &line(3) + &line(40);
        let (new, kept) = taken.in_sdp(&twice, false);
        assert_eq!(new.len(), MAX_REMOTE_CANDIDATES - 10);
        let kept = kept.expect("some left out");
        assert_eq!(kept, sdp(0..64) + &line(3) + &line(40));
        // An ICE restart forgets what was taken.
        let (new, kept) = taken.in_sdp(&sdp(100..164), true);
        assert_eq!((new.len(), kept), (MAX_REMOTE_CANDIDATES, None));
    }

    #[test]
    fn unencrypted_aes_cm_srtcp_is_told_apart() {
        use rtc::shared::marshal::Marshal;
        let mut context = crate::keytap::MasterKeys::new(
            rtc::srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
            &[1; 16],
            &[2; 14],
        )
        .context()
        .expect("a context");
        let report = rtc::rtcp::receiver_report::ReceiverReport {
            ssrc: 5,
            ..Default::default()
        }
        .marshal()
        .expect("marshals");
        let mut sealed = context.encrypt_rtcp(&report).expect("seals").to_vec();
        assert!(!unencrypted_aes_cm_srtcp(&sealed));
        let flag = sealed.len() - 14;
        sealed[flag] &= 0x7f;
        assert!(unencrypted_aes_cm_srtcp(&sealed));
        // `rtc` would have taken it: the reason for the check.
        assert!(context.decrypt_rtcp(&sealed).is_ok());
        // RTP, and what is too short to be SRTCP, are not.
        assert!(!unencrypted_aes_cm_srtcp(&[
            0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        assert!(!unencrypted_aes_cm_srtcp(&[0x80, 201, 0, 1, 0, 0, 0, 0]));
    }

    /// One sweep as the router makes it: events and reads, datagrams, timer; `found` says where
    /// something came out.
    fn sweep(polled: &mut Polled, found: Option<Stage>, deadline: Option<Instant>) {
        match found {
            Some(Stage::Start) => polled.found(),
            _ => polled.read(),
        }
        match found {
            Some(Stage::Read) => polled.found(),
            _ => polled.written(),
        }
        polled.timed(deadline);
    }

    #[test]
    fn rtc_is_left_unpolled_only_after_two_empty_sweeps_in_order() {
        let at = Some(Instant::now());
        let mut polled = Polled::BUSY;
        sweep(&mut polled, None, at);
        assert!(!polled.quiet(), "one empty sweep may have queued something");
        sweep(&mut polled, Some(Stage::Read), at);
        assert!(
            !polled.quiet(),
            "a datagram came out: the count starts over"
        );
        sweep(&mut polled, None, at);
        sweep(&mut polled, Some(Stage::Start), at);
        assert!(!polled.quiet(), "an event came out");
        // Datagrams polled before events and reads: not a sweep.
        polled.written();
        polled.read();
        polled.timed(at);
        sweep(&mut polled, None, at);
        assert!(!polled.quiet());
        sweep(&mut polled, None, at);
        assert!(polled.quiet());
        assert_eq!(polled.deadline, at, "its timer is remembered");
    }
}
