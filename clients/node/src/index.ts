export { Publisher, type PublisherOptions } from "./publisher.js";
export {
  addMembers,
  broadcastToConversation,
  close,
  defaultPublisher,
  disconnectUser,
  removeMembers,
  revokeTokens,
  sendEventToUser,
  sendEventToUsers,
  setMembers,
} from "./default.js";
export { ConfigError, InvalidMessage, PublishError, PublisherClosed, SsehubError } from "./errors.js";
export type { ConversationOptions, EventOptions, MemberOp } from "./schema.js";
export type { SenderStats } from "./sender.js";
export type { QueueType } from "./topology.js";
