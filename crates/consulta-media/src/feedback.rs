//! Which inbound RTCP reaches the application.
//!
//! In `rtc` 0.21 the interceptor chain ends in a terminus that swallows all inbound RTCP unless an
//! interceptor marks a packet `Attribute::DeliverToApplication`; with only the default interceptors,
//! a browser's PLI about a track we send never reaches us (found with Chromium and reproduced in
//! `tests/it/loopback.rs`). An SFU must relay keyframe requests to the publisher, so this interceptor
//! marks compound packets that contain a PLI or FIR. Receiver/sender reports, NACK and TWCC stay
//! with the interceptors (NACK is answered by `resend::Resender` from its buffer) unless the
//! application asks for all of it ([`RtcpDelivery::All`]).
//!
//! On a connection whose own write path (`send`) estimates the bandwidth, transport-wide feedback
//! reaches the application too: that path runs GCC itself.
//!
//! The same interceptor picks up the congestion controller's estimate, which `rtc` hands on only as
//! an attribute of the feedback packet that changed it (`Attribute::TargetBitrateChanged`), and
//! leaves it where its connection reads it. On such a connection receiver reports reach the
//! application too: their loss fractions are the SFU's second bandwidth signal (see
//! `consulta_sfu::bandwidth`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

use crate::belt::Belt;

/// Application-most slot: after the jitter buffer (13_000), so the chain has done its work first.
pub(crate) const SLOT: usize = 14_000;

/// Which inbound RTCP the application sees as [`MediaEvent::Rtcp`](crate::MediaEvent::Rtcp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtcpDelivery {
    /// Compound packets that contain a PLI, FIR or NACK: what an SFU relays to the publisher or
    /// counts (NACKs are answered by `resend::Resender` first, or by the own write path); on a
    /// connection that estimates its bandwidth, also those with a receiver report, and on one
    /// whose own write path estimates, those with transport-wide feedback.
    #[default]
    KeyframeRequests,
    /// Every inbound compound packet (reports, NACK, TWCC too), after `rtc`'s interceptors used it.
    All,
}

/// Marks inbound RTCP for delivery to the application, as [`RtcpDelivery`] says, and records the
/// bandwidth estimate.
#[derive(Default)]
pub(crate) struct KeyframeRequestDelivery {
    delivery: RtcpDelivery,
    /// The latest estimate in bits per second, when the connection estimates.
    estimate: Option<Arc<AtomicU64>>,
    /// Transport-wide feedback reaches the application too (the own write path estimates).
    transport_feedback: bool,
    belt: Belt,
}

impl KeyframeRequestDelivery {
    pub(crate) fn new(delivery: RtcpDelivery, estimate: Option<Arc<AtomicU64>>) -> Self {
        Self {
            delivery,
            estimate,
            ..Self::default()
        }
    }

    /// Delivers transport-wide feedback (TWCC) to the application too.
    pub(crate) fn with_transport_feedback(mut self) -> Self {
        self.transport_feedback = true;
        self
    }
}

/// The interceptor that hands inbound RTCP to the application as `delivery` says, for a plain `rtc`
/// peer connection ([`MediaPeer`](crate::MediaPeer) installs its own): in slot
/// [`RTCP_DELIVERY_SLOT`], it lets a test see the feedback an `rtc` sender gets.
pub fn rtcp_delivery(delivery: RtcpDelivery) -> impl Interceptor {
    KeyframeRequestDelivery::new(delivery, None)
}

/// Where [`rtcp_delivery`] goes in an `rtc` interceptor registry.
pub const RTCP_DELIVERY_SLOT: usize = SLOT;

impl std::fmt::Debug for KeyframeRequestDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyframeRequestDelivery")
            .field("delivery", &self.delivery)
            .field("estimate", &self.estimate)
            .field("belt", &self.belt)
            .finish()
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestDelivery {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(estimate) = &self.estimate
            && let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
                msg.message.get(&Attribute::TargetBitrateChanged {
                    bits_per_second: 0.0,
                })
        {
            // A float cast saturates: NaN becomes 0 and infinity the largest value.
            estimate.store(*bits_per_second as u64, Ordering::Relaxed);
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && (self.delivery == RtcpDelivery::All
                || packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                || (self.transport_feedback
                    && packets.iter().any(|p| p.as_any().is::<TransportLayerCc>()))
                || (self.estimate.is_some()
                    && packets.iter().any(|p| p.as_any().is::<ReceiverReport>())))
            && !msg.message.has(&Attribute::DeliverToApplication)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.belt.read(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.belt.next_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.belt.write(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.belt.next_write()
    }
}

impl Interceptor for KeyframeRequestDelivery {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Wire-ward of the receiver report generator (10_000), whose reports it filters on their way out.
pub(crate) const REPORT_FILTER_SLOT: usize = 9_500;

/// Most incoming audio streams one connection keeps report blocks for (a microphone and a screen
/// share's audio, renegotiated a few times); past it, a new one goes unreported, which costs it
/// only its remote-inbound statistics.
const MAX_AUDIO_STREAMS: usize = 16;

/// Keeps report blocks about incoming video out of the receiver reports a connection sends, so
/// that browsers keep tagging every video packet with its `mid` and `rid`.
///
/// `rtc` 0.21 learns which SSRC carries which simulcast layer from those header extensions, and
/// forgets it at every renegotiation: applying a description re-creates each receiver's track with
/// its layers' SSRCs unknown. Chromium sends the extensions only until a report block about the SSRC
/// arrives (libwebrtc's `ssrc_has_acked`). So once a publisher's camera had been reported on, any
/// later renegotiation of its connection (a screen share started, an ICE restart on resuming) left
/// every packet of the camera unrecognised and dropped: the camera froze for everyone, for good.
/// Without report blocks for video the extensions stay, and the next packet after a renegotiation
/// binds its layer again. Audio is declared by SSRC in the SDP, survives renegotiation, and keeps
/// its report blocks (Opus adapts its loss protection to them). The browser loses the round-trip
/// time and loss figures of its video sender's remote-inbound statistics; its congestion control
/// runs on transport-wide feedback (only its fallback loss estimate and RTT came from the reports).
///
/// It keeps the audio streams rather than the video ones: a renegotiation re-creates a layer's
/// track without unbinding its old SSRC, so a list of video SSRCs would fill with stale ones, and
/// past any bound new layers would be reported again and freeze at the next renegotiation.
#[derive(Default)]
pub(crate) struct VideoReportFilter {
    audio: Vec<u32>,
    belt: Belt,
}

impl std::fmt::Debug for VideoReportFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReportFilter")
            .field("audio", &self.audio.len())
            .finish()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for VideoReportFilter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.belt.read(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.belt.next_read()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            for packet in packets.iter_mut() {
                if let Some(report) = packet.as_any().downcast_ref::<ReceiverReport>()
                    && report.reports.iter().any(|r| !self.audio.contains(&r.ssrc))
                {
                    let mut report = report.clone();
                    report.reports.retain(|r| self.audio.contains(&r.ssrc));
                    *packet = Box::new(report);
                }
            }
        }
        self.belt.write(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.belt.next_write()
    }
}

impl Interceptor for VideoReportFilter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/")
            && !self.audio.contains(&info.ssrc)
            && self.audio.len() < MAX_AUDIO_STREAMS
        {
            self.audio.push(info.ssrc);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.audio.retain(|ssrc| *ssrc != info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn read(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        read_with(RtcpDelivery::KeyframeRequests, packets)
    }

    fn read_with(delivery: RtcpDelivery, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        let mut stage = KeyframeRequestDelivery::new(delivery, None);
        stage
            .handle_read(TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message: AttributedPacket::from(Packet::Rtcp(packets)),
            })
            .unwrap();
        stage.poll_read().expect("every packet passes through")
    }

    #[test]
    fn compound_packet_with_a_pli_is_delivered() {
        let out = read(vec![
            Box::new(ReceiverReport::default()),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 2,
            }),
        ]);
        assert!(out.message.has(&Attribute::DeliverToApplication));
    }

    #[test]
    fn reports_alone_stay_with_the_chain() {
        let out = read(vec![Box::new(ReceiverReport::default())]);
        assert!(!out.message.has(&Attribute::DeliverToApplication));
    }

    #[test]
    fn the_estimate_is_recorded() {
        let estimate = Arc::new(AtomicU64::new(0));
        let mut stage =
            KeyframeRequestDelivery::new(RtcpDelivery::default(), Some(Arc::clone(&estimate)));
        let mut message =
            AttributedPacket::from(Packet::Rtcp(vec![Box::new(ReceiverReport::default())]));
        message.add(Attribute::TargetBitrateChanged {
            bits_per_second: 812_345.6,
        });
        stage
            .handle_read(TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message,
            })
            .unwrap();
        assert_eq!(estimate.load(Ordering::Relaxed), 812_345);
        let out = stage.poll_read().expect("it passes");
        assert!(
            out.message.has(&Attribute::DeliverToApplication),
            "receiver reports reach a connection that estimates"
        );
    }

    #[test]
    fn report_blocks_about_video_are_kept_out_and_audio_ones_kept() {
        use rtc::rtcp::reception_report::ReceptionReport;
        let mut filter = VideoReportFilter::default();
        let stream = |ssrc, mime: &str| StreamInfo {
            ssrc,
            mime_type: mime.to_owned(),
            ..StreamInfo::default()
        };
        filter.bind_remote_stream(&stream(1, "video/VP8"));
        filter.bind_remote_stream(&stream(2, "audio/opus"));
        filter.bind_remote_stream(&stream(3, "audio/opus"));
        filter.unbind_remote_stream(&stream(3, "audio/opus"));
        let block = |ssrc| ReceptionReport {
            ssrc,
            ..ReceptionReport::default()
        };
        let report = ReceiverReport {
            ssrc: 9,
            reports: vec![block(1), block(2), block(3), block(4)],
            ..ReceiverReport::default()
        };
        filter
            .handle_write(TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message: AttributedPacket::from(Packet::Rtcp(vec![
                    Box::new(report),
                    Box::new(PictureLossIndication {
                        sender_ssrc: 9,
                        media_ssrc: 1,
                    }),
                ])),
            })
            .unwrap();
        let out = filter.poll_write().expect("every packet passes through");
        let Packet::Rtcp(packets) = out.message.packet else {
            panic!("rtcp");
        };
        let report = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("still a receiver report");
        let kept: Vec<u32> = report.reports.iter().map(|r| r.ssrc).collect();
        // A video stream, an unbound audio stream and one never bound (a layer whose binding a
        // renegotiation dropped) go unreported.
        assert_eq!(kept, vec![2]);
        assert!(packets[1].as_any().is::<PictureLossIndication>());
    }

    #[test]
    fn all_delivers_reports_too() {
        let out = read_with(RtcpDelivery::All, vec![Box::new(ReceiverReport::default())]);
        assert!(out.message.has(&Attribute::DeliverToApplication));
    }
}
