//! `forward`: inside to outside and back, untouched (the performance
//! baseline and a bump in the wire).

use super::{NetworkFunction, PacketCtx, Verdict};
use crate::frame::Frame;

#[derive(Default)]
pub struct Forward;

impl NetworkFunction for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn rewrite_span(&self) -> usize {
        0
    }

    const BURST_VERDICT: bool = true;
    const TRANSPARENT_L2: bool = true;
    const STATELESS: bool = true;

    #[inline]
    fn process(&mut self, _frame: &mut Frame<'_>, ctx: &PacketCtx) -> Verdict {
        Verdict::Forward(ctx.ingress.other())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OwnedFrame;
    use crate::nf::Side;

    #[test]
    fn sends_each_side_to_the_other_and_leaves_bytes_alone() {
        let mut f = Forward;
        let mut pkt = OwnedFrame::from_bytes(&[1, 2, 3, 4]);
        for (ingress, egress) in [(Side::Inside, Side::Outside), (Side::Outside, Side::Inside)] {
            let ctx = PacketCtx::new(ingress, 0);
            assert_eq!(pkt.with_frame(|fr| f.process(fr, &ctx)), Verdict::Forward(egress));
        }
        assert_eq!(pkt.data(), &[1, 2, 3, 4]);
    }
}
